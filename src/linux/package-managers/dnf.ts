import { yumLike } from './rpm-family.js';

/** dnf (RHEL 8+, Alma, Rocky, Oracle 8+, CentOS 8): versions held with the versionlock plugin. */
export const dnf = yumLike('dnf', {
  lockFiles: ['/var/lib/rpm/.rpm.lock', '/var/cache/dnf/metadata_lock.pid'],
  workFolders: ['/var/cache/dnf', '/var/lib/dnf', '/var/lib/rpm'],
  hold: (name) => ({ argv: ['dnf', '-q', '-y', 'versionlock', 'add', name] }),
  release: (name) => ({ argv: ['dnf', '-q', '-y', 'versionlock', 'delete', name] }),
});
