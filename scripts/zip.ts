import { promises as fs } from 'node:fs';
import { crc32, deflateRawSync } from 'node:zlib';

export interface ZipEntry {
  /** Path inside the zip, with forward slashes. */
  name: string;
  data: Uint8Array;
  /** Unix mode bits recorded for unzip tools that honour them (the agent sets +x itself). */
  mode: number;
}

/** The earliest time a zip can record (DOS time starts in 1980). */
export const ZIP_EPOCH = new Date(Date.UTC(1980, 0, 1));

/**
 * A time in the DOS format zip headers use (2-second resolution, no time zone: written as UTC so
 * the same commit gives the same bytes everywhere). Times before 1980 become 1980-01-01 00:00.
 */
export function dosDateTime(time: Date): { date: number; time: number } {
  const at = time.getTime() < ZIP_EPOCH.getTime() ? ZIP_EPOCH : time;
  return {
    date: ((at.getUTCFullYear() - 1980) << 9) | ((at.getUTCMonth() + 1) << 5) | at.getUTCDate(),
    time: (at.getUTCHours() << 11) | (at.getUTCMinutes() << 5) | Math.floor(at.getUTCSeconds() / 2),
  };
}

/**
 * Writes a deflated zip (no zip64: every entry and the whole archive stay below 4 GiB), byte for
 * byte reproducible: entries sorted by name (UTF-8 byte order) whatever order they are given in,
 * every entry stamped with `modified` (the commit's time, see scripts/package.ts), the mode bits
 * taken from the entry, never from the file system.
 */
export async function writeZip(
  file: string,
  entries: readonly ZipEntry[],
  modified: Date = ZIP_EPOCH,
): Promise<void> {
  const stamp = dosDateTime(modified);
  const sorted = [...entries].sort((a, b) =>
    Buffer.compare(Buffer.from(a.name), Buffer.from(b.name)),
  );
  const parts: Buffer[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  for (const entry of sorted) {
    const name = Buffer.from(entry.name, 'utf8');
    const compressed = deflateRawSync(entry.data, { level: 9 });
    const crc = crc32(entry.data);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4); // version needed: 2.0 (deflate)
    local.writeUInt16LE(0x0800, 6); // UTF-8 names
    local.writeUInt16LE(8, 8); // deflate
    local.writeUInt16LE(stamp.time, 10);
    local.writeUInt16LE(stamp.date, 12);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(compressed.length, 18);
    local.writeUInt32LE(entry.data.length, 22);
    local.writeUInt16LE(name.length, 26);
    local.writeUInt16LE(0, 28);
    parts.push(local, name, compressed);

    const header = Buffer.alloc(46);
    header.writeUInt32LE(0x02014b50, 0);
    header.writeUInt16LE((3 << 8) | 20, 4); // made by: Unix, 2.0
    header.writeUInt16LE(20, 6);
    header.writeUInt16LE(0x0800, 8);
    header.writeUInt16LE(8, 10);
    header.writeUInt16LE(stamp.time, 12);
    header.writeUInt16LE(stamp.date, 14);
    header.writeUInt32LE(crc, 16);
    header.writeUInt32LE(compressed.length, 20);
    header.writeUInt32LE(entry.data.length, 24);
    header.writeUInt16LE(name.length, 28);
    header.writeUInt32LE(((0o100000 | entry.mode) << 16) >>> 0, 38); // regular file + mode
    header.writeUInt32LE(offset, 42);
    central.push(header, name);
    offset += local.length + name.length + compressed.length;
  }
  const centralSize = central.reduce((sum, part) => sum + part.length, 0);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(sorted.length, 8);
  end.writeUInt16LE(sorted.length, 10);
  end.writeUInt32LE(centralSize, 12);
  end.writeUInt32LE(offset, 16);
  await fs.writeFile(file, Buffer.concat([...parts, ...central, end]));
}
