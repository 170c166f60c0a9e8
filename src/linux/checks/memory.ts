/**
 * The memory check. Microsoft documents that the VM "must have at least 1 GB of memory
 * allocated". The kernel never reports all of it: a VM sold as 1 GiB shows `MemTotal` of about
 * 0.9–0.95 GiB (firmware, the kernel image and reserved areas are subtracted), and a 512 MiB VM
 * shows about 0.45 GiB. The threshold is therefore 768 MiB of `MemTotal`: every 1 GiB VM passes
 * with room for a crash-kernel reservation, and every VM smaller than 1 GiB fails.
 */
export const MINIMUM_MEMTOTAL_KIB = 768 * 1024;

export const MEMINFO_FILE = '/proc/meminfo';

/** `MemTotal` in KiB from /proc/meminfo's text, or `undefined` when it is not there. */
export function parseMemTotalKib(text: string): number | undefined {
  const match = /^MemTotal:\s+(\d+)\s*kB\s*$/im.exec(text);
  return match?.[1] ? Number(match[1]) : undefined;
}

export function formatKib(kib: number): string {
  return kib >= 1024 * 1024
    ? `${(kib / 1024 / 1024).toFixed(2)} GiB`
    : `${Math.round(kib / 1024)} MiB`;
}
