import {
  closeSync,
  constants,
  fchmodSync,
  promises as fs,
  fstatSync,
  fsyncSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeSync,
} from 'node:fs';
import path from 'node:path';

/**
 * `bytes` random bytes as hex, from the global Web Crypto (node:crypto is not loaded on the
 * converged enable, docs/performance.md).
 */
export function randomHex(bytes: number): string {
  return Buffer.from(globalThis.crypto.getRandomValues(new Uint8Array(bytes))).toString('hex');
}

/**
 * Replaces `file` with `content` so that a reader sees either the old or the new content, never
 * a mix: the content goes to a new temporary file in the same folder, is flushed to disk, and is
 * renamed over the target. A symlink planted at `file` is replaced, never followed. The file gets
 * exactly `mode`, whatever the process's umask (apt reads keyrings as the unprivileged `_apt`).
 */
export async function writeFileAtomic(
  file: string,
  content: string | Uint8Array,
  mode = 0o600,
): Promise<void> {
  // Synchronous calls, like readFileIfExists: a handful of small writes per command.
  const dir = path.dirname(file);
  const temp = path.join(dir, `.${path.basename(file)}.${randomHex(6)}.tmp`);
  const fd = openSync(
    temp,
    constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | (constants.O_NOFOLLOW ?? 0),
    mode,
  );
  try {
    fchmodSync(fd, mode);
    const bytes = typeof content === 'string' ? Buffer.from(content) : content;
    for (let written = 0; written < bytes.length; ) {
      written += writeSync(fd, bytes, written);
    }
    fsyncSync(fd);
  } catch (error) {
    closeSync(fd);
    rmSync(temp, { force: true });
    throw error;
  }
  closeSync(fd);
  try {
    renameSync(temp, file);
  } catch (error) {
    rmSync(temp, { force: true });
    throw error;
  }
  syncDirectory(dir);
}

/** Flushes a folder's entries (a rename) to disk where the platform allows it. */
function syncDirectory(dir: string): void {
  if (process.platform === 'win32') return;
  let fd: number;
  try {
    fd = openSync(dir, constants.O_RDONLY);
  } catch {
    return;
  }
  try {
    fsyncSync(fd);
  } catch {
    // a file system that cannot flush a folder: the rename is still atomic
  } finally {
    closeSync(fd);
  }
}

/**
 * Reads a file, or returns `undefined` when it does not exist. A regular file is read at once,
 * synchronously: the runtime's asynchronous file calls cost more than reading a small file does,
 * and a converged enable reads some thirty of them (docs/performance.md). The file is opened
 * without blocking, so that anything else at the name (a FIFO) is left to the asynchronous read,
 * which the command's deadline still bounds.
 */
export async function readFileIfExists(file: string): Promise<Buffer | undefined> {
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | (constants.O_NONBLOCK ?? 0));
  } catch (error) {
    if (isNotFound(error)) return undefined;
    throw error;
  }
  try {
    if (fstatSync(fd).isFile()) return readFileSync(fd);
  } finally {
    closeSync(fd);
  }
  return fs.readFile(file).catch((error: unknown) => {
    if (isNotFound(error)) return undefined;
    throw error;
  });
}

/** The names in `folder` (read at once, like readFileIfExists); none when it cannot be read. */
export async function listFolder(folder: string): Promise<string[]> {
  try {
    return readdirSync(folder);
  } catch {
    return [];
  }
}

/** Reads a text file, or returns `undefined` when it does not exist. */
export async function readTextIfExists(file: string): Promise<string | undefined> {
  return (await readFileIfExists(file))?.toString('utf8');
}

export function isNotFound(error: unknown): boolean {
  return (error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
}

/** The message of any thrown value, for logs and status (never a stack trace). */
export function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}

/**
 * Why writing into `folder` failed, in words an operator can act on: a full disk, an exhausted
 * quota, a read-only or failing file system, or missing permissions, naming the folder whose
 * file system needs attention and what to look at. Other errors keep their own message.
 */
export function writeProblem(error: unknown, folder: string): string {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  switch (code) {
    case 'ENOSPC':
      return `the file system holding ${folder} is full (ENOSPC: no space left on device); free space or inodes there (df -h ${folder} and df -i ${folder} show what is left)`;
    case 'EDQUOT':
      return `root's disk quota on the file system holding ${folder} is used up (EDQUOT: disk quota exceeded); free space there or raise the quota`;
    case 'EROFS':
      return `the file system holding ${folder} is read-only (EROFS); remount it read-write (a file system the kernel found errors on is remounted read-only: see dmesg)`;
    case 'EIO':
      return `the disk holding ${folder} failed to write (EIO: input/output error); see dmesg`;
    case 'EACCES':
    case 'EPERM':
      return `writing into ${folder} is not permitted (${code}); check its owner, mode and attributes (lsattr)`;
    default:
      return errorMessage(error);
  }
}
