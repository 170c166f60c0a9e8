import { yumLike } from './rpm-family.js';

/** yum (RHEL 7, CentOS 7): versions held with the versionlock plugin. */
export const yum = yumLike('yum', {
  lockFiles: ['/var/run/yum.pid', '/var/lib/rpm/.rpm.lock'],
  workFolders: ['/var/cache/yum', '/var/lib/yum', '/var/lib/rpm'],
  hold: (name) => ({ argv: ['yum', '-q', '-y', 'versionlock', 'add', name] }),
  release: (name) => ({ argv: ['yum', '-q', '-y', 'versionlock', 'delete', name] }),
});
