import { yumLike } from './rpm-family.js';

/**
 * tdnf (CBL-Mariner 2.0, Azure Linux 3.0). It has no versionlock: nothing here needs a held
 * version, so holding is refused loudly rather than silently skipped.
 */
export const tdnf = yumLike('tdnf', {
  lockFiles: ['/var/run/.tdnf-instance-lockfile', '/var/lib/rpm/.rpm.lock'],
  workFolders: ['/var/cache/tdnf', '/var/lib/rpm'],
  hold: (name) => {
    throw new Error(`tdnf cannot hold ${name} at a version`);
  },
  release: (name) => {
    throw new Error(`tdnf cannot hold ${name} at a version`);
  },
});
