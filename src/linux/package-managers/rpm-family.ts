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

/**
 * A 429 in the words of the rpm family's download libraries: librepo (dnf: `Status code: 429
 * for <url>`) and libzypp (zypper: `Error code: HTTP response: 429`), both seen; urlgrabber (yum:
 * `HTTP Error 429`) and curl's own message (tdnf: `The requested URL returned error: 429`), not
 * seen here.
 */
export function rpmFamilyThrottled(output: string): boolean {
  return /Status code: 429 for |HTTP response: 429\b|HTTP Error 429\b|returned error: 429\b/.test(
    output,
  );
}

/** `name-version` as yum, dnf and tdnf take an exact version. */
export function rpmSpec(spec: PackageSpec): string {
  return spec.version ? `${spec.name}-${spec.version}` : spec.name;
}

/**
 * The common shape of yum, dnf and tdnf: refresh only our repository (`--disablerepo='*'
 * --enablerepo=<ours> makecache`), install with `-y`, remove with `remove -y`. Refresh and install
 * are not `-q`: quiet, dnf leaves out which URL answered what (`Status code: 429 for <url>`), which
 * is how the installer tells a rate limit from other failures.
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
      argv: [name, '-y', '--disablerepo=*', `--enablerepo=${repository.id}`, 'makecache'],
    }),
    install: (packages) => ({ argv: [name, '-y', 'install', ...packages.map(rpmSpec)] }),
    remove: (names) => ({ argv: [name, '-q', '-y', 'remove', ...names] }),
    throttled: rpmFamilyThrottled,
  };
}
