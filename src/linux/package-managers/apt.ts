import type { PackageManager } from './types.js';

/** The environment every apt/dpkg command runs with: no questions, ever. */
const NONINTERACTIVE = { DEBIAN_FRONTEND: 'noninteractive', NEEDRESTART_MODE: 'a' } as const;

/** The configuration-file policy of every dpkg run: keep the local version, never ask. */
const KEEP_CONFIGURATION = ['--force-confold', '--force-confdef'] as const;

/**
 * Each download is tried again up to 5 times when the mirror answers 429 or 5xx or cuts the
 * connection short. apt ignores Retry-After; from apt 2.3.7 (Debian 12, Ubuntu 22.04) it waits 1,
 * 2, 4, 8 and 16 s in between, so each file rides out about half a minute of throttling, and the
 * files of a first install (InRelease, Packages, the .deb) stay within the 2 minutes the installer
 * keeps for the package manager even one after the other. apt's own default there is 3 retries
 * (7 s); before apt 2.3 (Debian 11, Ubuntu 20.04) it is none, and retries come at once.
 * test/package/faults-mirror.test.ts shows the difference.
 */
const RETRIES = ['-o', 'Acquire::Retries=5'] as const;

/**
 * apt and dpkg (Debian, Ubuntu). Refreshes read only our sources file; installs keep local
 * configuration files (`--force-confold`); `apt-mark hold` pins a version.
 *
 * A run killed halfway (the agent's timeout kills apt-get and the handler) leaves dpkg's journal
 * in /var/lib/dpkg/updates, and apt refuses to work ("dpkg was interrupted") until
 * `dpkg --configure -a` finishes it; our package may be left half-installed (its files partly
 * unpacked, marked "reinstall required") or half-configured. Removal purges it in any of those
 * states: `--force-remove-reinstreq` lets dpkg remove a package it would otherwise want
 * reinstalled first, and it is only ever given our own packages.
 */
export const apt: PackageManager = {
  name: 'apt',
  lockFiles: ['/var/lib/dpkg/lock-frontend', '/var/lib/dpkg/lock', '/var/lib/apt/lists/lock'],
  workFolders: ['/var/cache/apt', '/var/lib/apt/lists', '/var/lib/dpkg'],
  cleanCommand: 'apt-get clean',
  queryInstalled: (names) => ({
    // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's own format syntax
    argv: ['dpkg-query', '-W', '-f=${Package}\\t${Status}\\t${Version}\\n', ...names],
  }),
  parseInstalled: (stdout) => {
    const installed = new Map<string, string>();
    for (const line of stdout.split('\n')) {
      const [name, status, version] = line.split('\t');
      if (name && version && status === 'install ok installed') installed.set(name, version);
    }
    return installed;
  },
  parsePresent: (stdout) => {
    const present = new Set<string>();
    for (const line of stdout.split('\n')) {
      // `${Status}` is "<want> <flag> <state>"; a purged package dpkg still lists is not-installed.
      const [name, status] = line.split('\t');
      const state = status?.trim().split(/\s+/)[2];
      if (name && state && state !== 'not-installed') present.add(name);
    }
    return present;
  },
  refresh: (repository) => ({
    argv: [
      'apt-get',
      'update',
      '-q',
      '-o',
      `Dir::Etc::sourcelist=${repository.file}`,
      '-o',
      'Dir::Etc::sourceparts=-',
      '-o',
      'APT::Get::List-Cleanup=0',
      '-o',
      'APT::Update::Error-Mode=any',
      ...RETRIES,
    ],
    env: NONINTERACTIVE,
  }),
  install: (packages) => ({
    argv: [
      'apt-get',
      'install',
      '-q',
      '-y',
      '--no-install-recommends',
      ...KEEP_CONFIGURATION.flatMap((option) => ['-o', `Dpkg::Options::=${option}`]),
      // Another apt starting between our wait for the lock and this command: wait, do not fail.
      '-o',
      'DPkg::Lock::Timeout=60',
      ...RETRIES,
      ...packages.map((spec) => (spec.version ? `${spec.name}=${spec.version}` : spec.name)),
    ],
    env: NONINTERACTIVE,
  }),
  remove: (names) => ({
    argv: ['dpkg', '--purge', '--force-remove-reinstreq', ...names],
    env: NONINTERACTIVE,
  }),
  interrupted: {
    journalFolder: '/var/lib/dpkg/updates',
    // What apt checks before it refuses: entries named by digits only (not tmp.i).
    isJournal: (name) => /^\d+$/.test(name),
    finish: { argv: ['dpkg', ...KEEP_CONFIGURATION, '--configure', '-a'], env: NONINTERACTIVE },
  },
  hold: (name) => ({ argv: ['apt-mark', 'hold', name] }),
  release: (name) => ({ argv: ['apt-mark', 'unhold', name] }),
  // E: Failed to fetch http://…/InRelease  429  Too Many Requests [IP: 127.0.0.1 80]
  throttled: (output) => /^E: Failed to fetch \S+\s+429\s/m.test(output),
};
