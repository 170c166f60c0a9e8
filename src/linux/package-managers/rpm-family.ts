import type { PackageManager, PackageSpec } from './types.js';

/** `rpm -q` with a format that prints name and version of each installed package. */
export function rpmQuery(names: readonly string[]) {
  return { argv: ['rpm', '-q', '--qf', '%{NAME}\\t%{VERSION}-%{RELEASE}\\n', ...names] };
}

/** Reads `rpmQuery`'s answer; "package x is not installed" lines are skipped. */
export function parseRpmQuery(stdout: string): Map<string, string> {
  const installed = new Map<string, string>();
  for (const line of stdout.split('\n')) {
    const [name, version] = line.split('\t');
    if (name && version && !line.startsWith('package ')) installed.set(name, version);
  }
  return installed;
}

/** rpm has no halfway states: what is present is what is installed. */
export function parseRpmPresent(stdout: string): Set<string> {
  return new Set(parseRpmQuery(stdout).keys());
}

/**
 * The name rpm gives a key imported with `rpm --import`: `gpg-pubkey-<key id>`, the last eight
 * hexadecimal digits of the fingerprint in lower case (its version part is the creation time).
 */
export function rpmKeyName(fingerprint: string): string {
  return `gpg-pubkey-${fingerprint.slice(-8).toLowerCase()}`;
}

/** Trusting a key for package signatures in every rpm family (zypper reads the rpm database). */
export const rpmKeys = {
  query: (name: string) => ({ argv: ['rpm', '-q', name] }),
  import: (file: string) => ({ argv: ['rpm', '--import', file] }),
  remove: (name: string) => ({ argv: ['rpm', '-e', '--allmatches', name] }),
};

/** `name-version` as yum, dnf and tdnf take an exact version. */
export function rpmSpec(spec: PackageSpec): string {
  return spec.version ? `${spec.name}-${spec.version}` : spec.name;
}

/**
 * The common shape of yum, dnf and tdnf: refresh only our repository (`--disablerepo='*'
 * --enablerepo=<ours> makecache`), install with `-y`, remove with `remove -y`.
 */
export function yumLike(
  name: 'dnf' | 'yum' | 'tdnf',
  quirks: Pick<PackageManager, 'lockFiles' | 'workFolders' | 'hold' | 'release'>,
): PackageManager {
  return {
    name,
    ...quirks,
    cleanCommand: `${name} clean all`,
    queryInstalled: rpmQuery,
    parseInstalled: parseRpmQuery,
    parsePresent: parseRpmPresent,
    refresh: (repository) => ({
      argv: [name, '-q', '-y', '--disablerepo=*', `--enablerepo=${repository.id}`, 'makecache'],
    }),
    install: (packages) => ({ argv: [name, '-q', '-y', 'install', ...packages.map(rpmSpec)] }),
    remove: (names) => ({ argv: [name, '-q', '-y', 'remove', ...names] }),
  };
}
