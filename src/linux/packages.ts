import type { OsRelease } from './checks/os-release.js';
import { compareVersions } from './checks/support-matrix.js';
import type { ManagerName, PackageSpec } from './package-managers/index.js';

/**
 * Which packages, in which order, at which versions: `aadsshlogin-selinux` first and only where
 * the distribution's SELinux policy package is installed, then `aadsshlogin`. SLES and openSUSE
 * before 15.6 get `1.0.027980001`, held there: later builds need `libsemanage.so.2`, which those
 * releases lack (Microsoft's documentation, 2025-03-07).
 */
export const MAIN_PACKAGE = 'aadsshlogin';
export const SELINUX_PACKAGE = 'aadsshlogin-selinux';
export const SUSE_PINNED_VERSION = '1.0.027980001';

/** The SELinux policy package whose presence means "install aadsshlogin-selinux". */
export function selinuxPolicyPackage(os: OsRelease, manager: ManagerName): string {
  if (manager === 'apt') return 'selinux-policy-default';
  if (manager === 'zypper') {
    return (os.versionId ?? '').startsWith('15')
      ? 'selinux-policy-targeted'
      : 'selinux-policy-minimum';
  }
  return 'selinux-policy-targeted';
}

function isSuse(os: OsRelease): boolean {
  return ['sles', 'sles_sap', 'opensuse-leap', 'opensuse'].includes(os.id);
}

export interface PackagePlan {
  /** Every package wanted, in install order, with the version required. */
  wanted: PackageSpec[];
  /** Those of `wanted` not yet installed at an acceptable version. */
  missing: PackageSpec[];
  /** Packages to hold at their version after installing. */
  holds: string[];
}

/**
 * The packages that may hold the OpenSSH server, first found first: `openssh-server` on most
 * distributions, `openssh` on SUSE releases that do not split it.
 */
export const OPENSSH_PACKAGES = ['openssh-server', 'openssh'] as const;

/**
 * The packages to query before planning: ours, the SELinux policy package, and the OpenSSH server
 * (its version is checked for the OpenSshVersion warning, without running sshd).
 */
export function packagesToQuery(os: OsRelease, manager: ManagerName): string[] {
  return [SELINUX_PACKAGE, MAIN_PACKAGE, selinuxPolicyPackage(os, manager), ...OPENSSH_PACKAGES];
}

/**
 * The package plan from what is installed (`name → version`, as the package database says). An
 * installed package satisfies "latest" at any version (enable never upgrades); a pinned version is
 * satisfied only by that version.
 */
export function planPackages(
  os: OsRelease,
  manager: ManagerName,
  installed: ReadonlyMap<string, string>,
): PackagePlan {
  const pin =
    isSuse(os) && compareVersions(os.versionId ?? '0', '15.6') < 0
      ? SUSE_PINNED_VERSION
      : undefined;
  const names = installed.has(selinuxPolicyPackage(os, manager))
    ? [SELINUX_PACKAGE, MAIN_PACKAGE]
    : [MAIN_PACKAGE];
  const wanted = names.map((name) => (pin ? { name, version: pin } : { name }));
  const satisfied = (spec: PackageSpec) => {
    const version = installed.get(spec.name);
    if (version === undefined) return false;
    return (
      spec.version === undefined ||
      version === spec.version ||
      version.startsWith(`${spec.version}-`)
    );
  };
  return {
    wanted,
    missing: wanted.filter((spec) => !satisfied(spec)),
    holds: pin ? names : [],
  };
}
