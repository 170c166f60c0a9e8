import type { PackageManager } from './types.js';

/** The environment every apt/dpkg command runs with: no questions, ever. */
const NONINTERACTIVE = { DEBIAN_FRONTEND: 'noninteractive', NEEDRESTART_MODE: 'a' } as const;

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
 */
export const apt: PackageManager = {
  name: 'apt',
  lockFiles: ['/var/lib/dpkg/lock-frontend', '/var/lib/dpkg/lock', '/var/lib/apt/lists/lock'],
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
      '-o',
      'Dpkg::Options::=--force-confold',
      '-o',
      'Dpkg::Options::=--force-confdef',
      // Another apt starting between our wait for the lock and this command: wait, do not fail.
      '-o',
      'DPkg::Lock::Timeout=60',
      ...RETRIES,
      ...packages.map((spec) => (spec.version ? `${spec.name}=${spec.version}` : spec.name)),
    ],
    env: NONINTERACTIVE,
  }),
  remove: (names) => ({ argv: ['dpkg', '--purge', ...names], env: NONINTERACTIVE }),
  hold: (name) => ({ argv: ['apt-mark', 'hold', name] }),
  release: (name) => ({ argv: ['apt-mark', 'unhold', name] }),
  // E: Failed to fetch http://…/InRelease  429  Too Many Requests [IP: 127.0.0.1 80]
  throttled: (output) => /^E: Failed to fetch \S+\s+429\s/m.test(output),
};
