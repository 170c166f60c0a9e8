/**
 * How large a zip may be. The platform's limits are the ones Azure's extension pipeline enforces
 * (../shared/reference/publishing.md §2: "these limits come from arc"); the budget is our own,
 * from docs/performance.md (budget 3).
 */

const MiB = 1024 * 1024;

/** The platform refuses a zip larger than this (compressed). */
export const PLATFORM_MAX_ZIP_BYTES = 500 * MiB;

/** The platform refuses a zip whose files add up to more than this (unpacked). */
export const PLATFORM_MAX_UNPACKED_BYTES = 1000 * MiB;

/** Our budget for the AADSSHLoginForLinux zip: 60 MB (docs/performance.md, budget 3). */
export const LINUX_ZIP_BUDGET_BYTES = 60_000_000;

/** The limits a release checks every zip against. */
export interface SizeLimits {
  maxZipBytes: number;
  maxUnpackedBytes: number;
  /** Our own budget per extension type (compressed bytes); a type not listed has none. */
  budgets: Readonly<Record<string, number>>;
}

/** The limits `npm run release` uses. Nothing on its command line changes them. */
export const RELEASE_LIMITS: SizeLimits = {
  maxZipBytes: PLATFORM_MAX_ZIP_BYTES,
  maxUnpackedBytes: PLATFORM_MAX_UNPACKED_BYTES,
  budgets: { AADSSHLoginForLinux: LINUX_ZIP_BUDGET_BYTES },
};

/** Bytes as MiB with one decimal, for the platform's limits (which are in MiB). */
export function mebibytes(bytes: number): string {
  return `${(bytes / MiB).toFixed(1)} MiB`;
}

/** Bytes as decimal MB with one decimal, for our budget (docs/performance.md uses MB). */
export function megabytes(bytes: number): string {
  return `${(bytes / 1_000_000).toFixed(1)} MB`;
}
