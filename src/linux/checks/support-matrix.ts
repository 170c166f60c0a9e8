import type { OsRelease } from './os-release.js';

/**
 * Where AADSSHLoginForLinux is supported: one row per distribution and version range, with the
 * date and source of the row. Rows are matched on `ID` only (never `ID_LIKE`: a derivative is not
 * what Microsoft tests and publishes packages for) and versions compare numerically, component
 * by component (`8.10` is after `8.3`, `7.9` before `7.10`).
 *
 * Sources:
 * - E-LNX: "Sign in to a Linux VM in Azure by using Microsoft Entra ID and OpenSSH", ms.date
 *   2025-03-07 (MicrosoftDocs/entra-docs howto-vm-sign-in-azure-ad-linux.md), and PR
 *   MicrosoftDocs/entra-docs#1969 (merged 2026-05-15) adding RHEL 10.1.
 * - A-LNX-2022: the same article at GA, ms.date 2022-06-20 (MicrosoftDocs/azure-docs), and its
 *   2023–2024 revisions, the last tables that listed CentOS and CBL-Mariner 1.
 */

export interface MatrixRow {
  /** The os-release `ID` values the row covers. */
  ids: readonly string[];
  name: string;
  /** Inclusive bounds; `to` absent means "and later versions of the same major". */
  from: string;
  to?: string;
  supported: boolean;
  /** When and where the row was documented, and any decision of ours. */
  source: string;
}

export const supportMatrix: readonly MatrixRow[] = [
  {
    ids: ['almalinux'],
    name: 'AlmaLinux',
    from: '8',
    to: '9',
    supported: true,
    source: 'E-LNX 2025-03-07',
  },
  {
    ids: ['azurelinux'],
    name: 'Azure Linux',
    from: '3.0',
    to: '3',
    supported: true,
    source: 'E-LNX 2025-03-07',
  },
  {
    ids: ['mariner'],
    name: 'CBL-Mariner',
    from: '2.0',
    to: '2',
    supported: true,
    source: 'E-LNX 2025-03-07',
  },
  {
    ids: ['mariner'],
    name: 'CBL-Mariner',
    from: '1.0',
    to: '1',
    supported: false,
    source:
      'A-LNX-2022 listed CBL-Mariner 1; decided unsupported: its packages.microsoft.com repository was deleted in 2024, so installation cannot succeed',
  },
  {
    ids: ['debian'],
    name: 'Debian',
    from: '9',
    to: '12',
    supported: true,
    source: 'E-LNX 2025-03-07',
  },
  {
    ids: ['opensuse-leap'],
    name: 'openSUSE Leap',
    from: '15.1',
    to: '15',
    supported: true,
    source: 'E-LNX 2025-03-07',
  },
  {
    ids: ['opensuse', 'opensuse-leap'],
    name: 'openSUSE Leap',
    from: '42.3',
    to: '42.3',
    supported: true,
    source: 'E-LNX 2025-03-07 (Leap 42.3 still wrote ID=opensuse)',
  },
  {
    ids: ['ol'],
    name: 'Oracle Linux',
    from: '8',
    to: '9',
    supported: true,
    source: 'E-LNX 2025-03-07',
  },
  {
    ids: ['rhel'],
    name: 'RHEL',
    from: '7.4',
    to: '7.9',
    supported: true,
    source: 'E-LNX 2025-03-07',
  },
  {
    ids: ['rhel'],
    name: 'RHEL',
    from: '8.3',
    to: '8',
    supported: true,
    source: 'E-LNX 2025-03-07',
  },
  {
    ids: ['rhel'],
    name: 'RHEL',
    from: '9.0',
    to: '9',
    supported: true,
    source: 'E-LNX 2025-03-07',
  },
  {
    ids: ['rhel'],
    name: 'RHEL',
    from: '10.1',
    to: '10',
    supported: true,
    source: 'entra-docs#1969, 2026-05-15',
  },
  {
    ids: ['rocky'],
    name: 'Rocky Linux',
    from: '8',
    to: '9',
    supported: true,
    source: 'E-LNX 2025-03-07',
  },
  {
    ids: ['sles', 'sles_sap'],
    name: 'SLES',
    from: '12',
    to: '12',
    supported: true,
    source: 'E-LNX 2025-03-07',
  },
  {
    ids: ['sles', 'sles_sap'],
    name: 'SLES',
    from: '15.1',
    to: '15',
    supported: true,
    source: 'E-LNX 2025-03-07',
  },
  {
    ids: ['ubuntu'],
    name: 'Ubuntu',
    from: '16.04',
    to: '24.04',
    supported: true,
    source: 'E-LNX 2025-03-07 ("16.04 to 24.04", interim releases included)',
  },
  {
    ids: ['centos'],
    name: 'CentOS',
    from: '7',
    to: '8',
    supported: true,
    source:
      'A-LNX-2022 and its 2023–2024 revisions; dropped from E-LNX 2025 with CentOS end of life, kept so that VMs the extension has worked on keep working (packages come from the rhel folder)',
  },
];

/** Compares dotted versions numerically; missing components are 0 (`8` equals `8.0`). */
export function compareVersions(left: string, right: string): number {
  const a = left.split('.').map((part) => Number.parseInt(part, 10) || 0);
  const b = right.split('.').map((part) => Number.parseInt(part, 10) || 0);
  for (let index = 0; index < Math.max(a.length, b.length); index++) {
    const difference = (a[index] ?? 0) - (b[index] ?? 0);
    if (difference !== 0) return Math.sign(difference);
  }
  return 0;
}

/** Whether `version` is inside a row: `to` bounds by its number of components (`9` means 9.x). */
function inRange(version: string, row: MatrixRow): boolean {
  if (compareVersions(version, row.from) < 0) return false;
  if (row.to === undefined) return true;
  const depth = row.to.split('.').length;
  const truncated = version.split('.').slice(0, depth).join('.');
  return compareVersions(truncated, row.to) <= 0;
}

/** `8–9`, `16.04–24.04`, `8.3 and later 8.x`, `12`. */
export function describeRange(row: MatrixRow): string {
  if (row.to === undefined) return `${row.from} and later`;
  if (row.to === row.from) return row.from;
  if (row.to.split('.').length < row.from.split('.').length) {
    return row.from.startsWith(`${row.to}.`)
      ? `${row.from} and later ${row.to}.x`
      : `${row.from}–${row.to}.x`;
  }
  return `${row.from}–${row.to}`;
}

export const SUPPORTED_ARCHITECTURES = ['x86_64', 'aarch64'] as const;

export type SupportVerdict =
  | { supported: true; row: MatrixRow }
  | { supported: false; reason: string };

/** The verdict for what os-release says on an architecture (`uname -m` style). */
export function supportVerdict(os: OsRelease, architecture: string): SupportVerdict {
  const found = `ID=${os.id}, VERSION_ID=${os.versionId ?? '(none)'}, architecture ${architecture}`;
  if (!(SUPPORTED_ARCHITECTURES as readonly string[]).includes(architecture)) {
    return { supported: false, reason: `${found}: only x86_64 and aarch64 are supported.` };
  }
  if (!/^\d+(\.\d+)*$/.test(os.versionId ?? '')) {
    return {
      supported: false,
      reason: `${found}: a distribution without a numeric VERSION_ID is not supported.`,
    };
  }
  const version = os.versionId as string;
  const rows = supportMatrix.filter((row) => row.ids.includes(os.id));
  const row = rows.find((candidate) => inRange(version, candidate));
  if (row?.supported) return { supported: true, row };
  if (row)
    return {
      supported: false,
      reason: `${found}: ${row.name} ${version} is not supported (${row.source}).`,
    };
  if (rows.length === 0)
    return { supported: false, reason: `${found}: this distribution is not supported.` };
  const versions = rows
    .filter((candidate) => candidate.supported)
    .map(describeRange)
    .join(', ');
  return {
    supported: false,
    reason: `${found}: ${rows[0]?.name} ${version} is not supported (supported: ${versions}).`,
  };
}
