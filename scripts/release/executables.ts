/**
 * What an executable in a zip is built for, read from its first bytes: ELF (Linux) or PE (Windows),
 * and the machine. An `.xz` file is looked at through `xz -dc`, the way the entry script unpacks it.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { entryData, entryHead, type ZipArchive, type ZipFileEntry } from './zip-read.js';

/** The architectures as Azure names them in `supportedArchitectures`. */
export type Architecture = 'x64' | 'arm64';

/** An executable file found in a zip. */
export interface ExecutableFile {
  path: string;
  format: 'ELF64' | 'ELF32' | 'PE32+' | 'PE32';
  /** The machine, or `machine 0x…` when it is neither x86-64 nor aarch64. */
  architecture: Architecture | string;
}

const HEAD_BYTES = 4096;

/** The format and machine of an executable from its first bytes; undefined when it is neither. */
export function executableKind(
  head: Buffer,
): Pick<ExecutableFile, 'format' | 'architecture'> | undefined {
  if (head.length >= 20 && head.readUInt32BE(0) === 0x7f454c46) {
    const machine = head.readUInt8(5) === 2 ? head.readUInt16BE(18) : head.readUInt16LE(18);
    const names: Record<number, Architecture> = { 62: 'x64', 183: 'arm64' };
    return {
      format: head.readUInt8(4) === 2 ? 'ELF64' : 'ELF32',
      architecture: names[machine] ?? `machine 0x${machine.toString(16)}`,
    };
  }
  if (head.length >= 64 && head.toString('latin1', 0, 2) === 'MZ') {
    const pe = head.readUInt32LE(0x3c);
    if (pe + 26 > head.length || head.readUInt32BE(pe) !== 0x50450000) return undefined;
    const machine = head.readUInt16LE(pe + 4);
    const names: Record<number, Architecture> = { 34404: 'x64', 43620: 'arm64' };
    return {
      format: head.readUInt16LE(pe + 24) === 0x20b ? 'PE32+' : 'PE32',
      architecture: names[machine] ?? `machine 0x${machine.toString(16)}`,
    };
  }
  return undefined;
}

/** The first bytes of an `.xz` entry once decompressed (`xz -dc <file> | head -c`). */
function xzHead(archive: ZipArchive, entry: ZipFileEntry): Buffer {
  const folder = mkdtempSync(path.join(os.tmpdir(), 'aad-xz-'));
  try {
    const file = path.join(folder, 'entry.xz');
    writeFileSync(file, entryData(archive, entry));
    const run = spawnSync('sh', ['-c', `xz -dc -- "$1" | head -c ${HEAD_BYTES}`, 'sh', file], {
      maxBuffer: 2 * HEAD_BYTES,
    });
    if (run.error)
      throw new Error(`cannot run xz to look into ${entry.name}: ${run.error.message}`);
    return run.stdout;
  } finally {
    rmSync(folder, { recursive: true, force: true });
  }
}

/**
 * Every executable under `bin/` in a zip (any file whose content is ELF or PE, also inside an
 * `.xz`), with what it is built for.
 */
export function executablesIn(archive: ZipArchive): ExecutableFile[] {
  const found: ExecutableFile[] = [];
  for (const entry of archive.entries) {
    if (!entry.name.startsWith('bin/') || entry.name.endsWith('/')) continue;
    const head = entry.name.endsWith('.xz')
      ? xzHead(archive, entry)
      : entryHead(archive, entry, HEAD_BYTES);
    const kind = executableKind(head);
    if (kind) found.push({ path: entry.name, ...kind });
  }
  return found;
}
