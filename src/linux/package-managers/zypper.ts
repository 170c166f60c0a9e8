import { parseRpmPresent, parseRpmQuery, rpmFamilyThrottled, rpmQuery } from './rpm-family.js';
import type { PackageManager } from './types.js';

/**
 * A lock taken between our wait and zypper's start (another zypper, PackageKit) makes zypper exit
 * 7 at once by default; libzypp waits this many seconds for it instead, as apt gets
 * `DPkg::Lock::Timeout=60`.
 */
const WAIT_FOR_LOCK = { ZYPP_LOCK_TIMEOUT: '60' };

/**
 * zypper (SLES, openSUSE). Non-interactive (`-n`), refreshes only our repository by its alias,
 * holds a version with a package lock (`addlock`) so `zypper update` cannot replace it.
 */
export const zypper: PackageManager = {
  name: 'zypper',
  // libzypp writes the holder's pid into zypp.pid (in /run; /var/run on older releases), and a
  // second zypper exits at once with 7 while that process lives. rpm's kernel lock on .rpm.lock
  // covers a bare `rpm` transaction; SUSE keeps the database in /usr/lib/sysimage/rpm.
  lockFiles: [
    '/run/zypp.pid',
    '/var/run/zypp.pid',
    '/var/lib/rpm/.rpm.lock',
    '/usr/lib/sysimage/rpm/.rpm.lock',
  ],
  workFolders: ['/var/cache/zypp', '/var/lib/zypp', '/var/lib/rpm'],
  cleanCommand: 'zypper clean --all',
  queryInstalled: rpmQuery,
  parseInstalled: parseRpmQuery,
  parsePresent: parseRpmPresent,
  refresh: (repository) => ({
    argv: ['zypper', '-q', '-n', 'refresh', repository.id],
    env: WAIT_FOR_LOCK,
  }),
  install: (packages) => ({
    argv: [
      'zypper',
      '-q',
      '-n',
      'install',
      '--oldpackage',
      ...packages.map((spec) => (spec.version ? `${spec.name}=${spec.version}` : spec.name)),
    ],
    env: WAIT_FOR_LOCK,
  }),
  remove: (names) => ({ argv: ['zypper', '-q', '-n', 'remove', ...names], env: WAIT_FOR_LOCK }),
  hold: (name) => ({ argv: ['zypper', '-q', '-n', 'addlock', name], env: WAIT_FOR_LOCK }),
  release: (name) => ({ argv: ['zypper', '-q', '-n', 'removelock', name], env: WAIT_FOR_LOCK }),
  throttled: rpmFamilyThrottled,
};
