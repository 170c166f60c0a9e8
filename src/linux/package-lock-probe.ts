import { promises as fs } from 'node:fs';
import type { LockProbe } from './package-lock.js';

/** The real VM: /proc and the lock files' device numbers and inodes. */
export const systemLockProbe: LockProbe = {
  readText: (file) => fs.readFile(file, 'utf8').catch(() => undefined),
  identity: async (file) => {
    const stat = await fs.stat(file, { bigint: true }).catch(() => undefined);
    if (!stat) return undefined;
    // glibc's dev_t: major in bits 8–19 and 44–63, minor in bits 0–7 and 20–43.
    const dev = stat.dev;
    const major = Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & 0xfffff000n));
    const minor = Number((dev & 0xffn) | ((dev >> 12n) & 0xffffff00n));
    return { major, minor, inode: stat.ino };
  },
};
