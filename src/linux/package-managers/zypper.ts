import { parseRpmQuery, rpmFamilyThrottled, rpmQuery } from './rpm-family.js';
import type { PackageManager } from './types.js';

/**
 * zypper (SLES, openSUSE). Non-interactive (`-n`), refreshes only our repository by its alias,
 * holds a version with a package lock (`addlock`) so `zypper update` cannot replace it.
 */
export const zypper: PackageManager = {
  name: 'zypper',
  lockFiles: ['/run/zypp.pid', '/var/run/zypp.pid', '/var/lib/rpm/.rpm.lock'],
  queryInstalled: rpmQuery,
  parseInstalled: parseRpmQuery,
  refresh: (repository) => ({ argv: ['zypper', '-q', '-n', 'refresh', repository.id] }),
  install: (packages) => ({
    argv: [
      'zypper',
      '-q',
      '-n',
      'install',
      '--oldpackage',
      ...packages.map((spec) => (spec.version ? `${spec.name}=${spec.version}` : spec.name)),
    ],
  }),
  remove: (names) => ({ argv: ['zypper', '-q', '-n', 'remove', ...names] }),
  hold: (name) => ({ argv: ['zypper', '-q', '-n', 'addlock', name] }),
  release: (name) => ({ argv: ['zypper', '-q', '-n', 'removelock', name] }),
  throttled: rpmFamilyThrottled,
};
