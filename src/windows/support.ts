/**
 * Which Windows installations AADLoginForWindows supports, as data (like the Linux matrix), read
 * from the registry: the build (`CurrentBuildNumber`), the product type (`ProductType`: `WinNT`
 * for a client, `ServerNT`/`LanmanNT` for a server) and the installation type (`Client`, `Server`,
 * `Server Core`). A build number alone cannot tell Windows 11 24H2 from Server 2025 (both 26100).
 */
export interface WindowsVersion {
  build: number;
  productType: string;
  installationType: string;
  productName: string;
}

interface SupportRow {
  edition: 'client' | 'server';
  minimumBuild: number;
  /** Where the row comes from, and when. */
  source: string;
}

export const WINDOWS_SUPPORT: readonly SupportRow[] = [
  {
    edition: 'client',
    minimumBuild: 17763,
    source:
      'Windows 10 1809 and later, Windows 11 21H2 and later (learn.microsoft.com, AADLoginForWindows, 2019-10-29 to 2025-06-27)',
  },
  {
    edition: 'server',
    minimumBuild: 17763,
    source:
      'Windows Server 2019 and later "installed with Desktop Experience" (learn.microsoft.com, 2025-06-27); Server Core is not supported',
  },
];

export type SupportVerdict =
  | { supported: true; description: string }
  | { supported: false; reason: string };

export function describeWindows(version: WindowsVersion): string {
  return `${version.productName || 'Windows'} (build ${version.build}, ${version.installationType || 'unknown installation type'})`;
}

/** The documented message of exit code 51 on Windows, which every refusal starts with. */
export const UNSUPPORTED = "This extension isn't supported on the VM's operating system:";

export function windowsSupportVerdict(version: WindowsVersion): SupportVerdict {
  const description = `${UNSUPPORTED} ${describeWindows(version)}`;
  const server = version.productType !== 'WinNT';
  if (server && /core/i.test(version.installationType)) {
    return {
      supported: false,
      reason: `${description} is Server Core; the extension needs Windows Server with Desktop Experience.`,
    };
  }
  const row = WINDOWS_SUPPORT.find(
    (candidate) => candidate.edition === (server ? 'server' : 'client'),
  );
  if (!row || !Number.isInteger(version.build) || version.build < row.minimumBuild) {
    return {
      supported: false,
      reason: `${description} is older than build ${row?.minimumBuild ?? 17763} (Windows 10 1809 / Windows Server 2019).`,
    };
  }
  return { supported: true, description: `${describeWindows(version)} is supported.` };
}
