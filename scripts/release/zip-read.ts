/**
 * Reads the zips scripts/zip.ts writes (and any plain zip without zip64): the central directory,
 * and each entry's content or just its first bytes. Used by the release to check what a zip
 * really holds, never trusting the build's own account of it.
 */
import { promises as fs } from 'node:fs';
import { constants, inflateRawSync } from 'node:zlib';

/** One file in a zip, as its central directory describes it. */
export interface ZipFileEntry {
  name: string;
  /** 0 stored, 8 deflated. */
  method: number;
  compressedSize: number;
  size: number;
  /** Unix permission bits (0 when the zip was not made on Unix). */
  mode: number;
  dosDate: number;
  dosTime: number;
  localHeaderOffset: number;
}

/** A zip read into memory, with its entries in the order of its central directory. */
export interface ZipArchive {
  path: string;
  bytes: Buffer;
  entries: ZipFileEntry[];
}

const END_OF_CENTRAL_DIRECTORY = 0x06054b50;
const CENTRAL_HEADER = 0x02014b50;
const LOCAL_HEADER = 0x04034b50;

/** Reads a zip's central directory; throws a message naming the file when it is not a zip. */
export async function readZip(file: string): Promise<ZipArchive> {
  const bytes = await fs.readFile(file);
  let end = -1;
  for (let at = bytes.length - 22; at >= Math.max(0, bytes.length - 22 - 0xffff); at--) {
    if (bytes.readUInt32LE(at) === END_OF_CENTRAL_DIRECTORY) {
      end = at;
      break;
    }
  }
  if (end < 0) throw new Error(`${file} is not a zip (no end of central directory)`);
  const count = bytes.readUInt16LE(end + 10);
  let at = bytes.readUInt32LE(end + 16);
  const entries: ZipFileEntry[] = [];
  for (let index = 0; index < count; index++) {
    if (bytes.readUInt32LE(at) !== CENTRAL_HEADER) {
      throw new Error(`${file}: central directory entry ${index} is damaged`);
    }
    const nameLength = bytes.readUInt16LE(at + 28);
    const extraLength = bytes.readUInt16LE(at + 30);
    const commentLength = bytes.readUInt16LE(at + 32);
    const madeOnUnix = bytes.readUInt8(at + 5) === 3;
    entries.push({
      name: bytes.toString('utf8', at + 46, at + 46 + nameLength),
      method: bytes.readUInt16LE(at + 10),
      dosTime: bytes.readUInt16LE(at + 12),
      dosDate: bytes.readUInt16LE(at + 14),
      compressedSize: bytes.readUInt32LE(at + 20),
      size: bytes.readUInt32LE(at + 24),
      mode: madeOnUnix ? (bytes.readUInt32LE(at + 38) >>> 16) & 0o7777 : 0,
      localHeaderOffset: bytes.readUInt32LE(at + 42),
    });
    at += 46 + nameLength + extraLength + commentLength;
  }
  return { path: file, bytes, entries };
}

function compressedData(archive: ZipArchive, entry: ZipFileEntry): Buffer {
  const at = entry.localHeaderOffset;
  if (archive.bytes.readUInt32LE(at) !== LOCAL_HEADER) {
    throw new Error(`${archive.path}: the local header of ${entry.name} is damaged`);
  }
  const start = at + 30 + archive.bytes.readUInt16LE(at + 26) + archive.bytes.readUInt16LE(at + 28);
  return archive.bytes.subarray(start, start + entry.compressedSize);
}

/** The whole content of an entry. */
export function entryData(archive: ZipArchive, entry: ZipFileEntry): Buffer {
  const data = compressedData(archive, entry);
  if (entry.method === 0) return Buffer.from(data);
  if (entry.method === 8) return inflateRawSync(data);
  throw new Error(`${archive.path}: ${entry.name} uses compression method ${entry.method}`);
}

/** The first `length` bytes of an entry, inflating no more than needed. */
export function entryHead(archive: ZipArchive, entry: ZipFileEntry, length: number): Buffer {
  const data = compressedData(archive, entry);
  if (entry.method === 0) return Buffer.from(data.subarray(0, length));
  if (entry.method !== 8) {
    throw new Error(`${archive.path}: ${entry.name} uses compression method ${entry.method}`);
  }
  const slice = data.subarray(0, Math.min(data.length, 64 * 1024 + length));
  const head = inflateRawSync(slice, { finishFlush: constants.Z_SYNC_FLUSH });
  return head.subarray(0, length);
}
