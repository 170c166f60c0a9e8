import { yumLike } from './rpm-family.js';

/**
 * dnf (RHEL 8+, Alma, Rocky, Oracle 8+, CentOS 8): versions held with the versionlock plugin.
 *
 * Its locks, as dnf 4 takes them (dnf/lock.py): pid files that exist only while held and hold the
 * holder's pid — rpmdb_lock.pid in the persistdir for a whole transaction, metadata_lock.pid and
 * download_lock.pid in the cachedir (dnf-makecache, downloads) — and rpm's own kernel lock on
 * .rpm.lock while rpm runs the transaction. Another dnf waits for them without a limit, so they
 * are waited for here, within the budget. The database is in /usr/lib/sysimage/rpm where
 * /var/lib/rpm is only a link to it (RHEL 10, as Fedora 36+).
 */
export const dnf = yumLike('dnf', {
  lockFiles: [
    '/var/lib/rpm/.rpm.lock',
    '/usr/lib/sysimage/rpm/.rpm.lock',
    '/var/lib/dnf/rpmdb_lock.pid',
    '/var/cache/dnf/metadata_lock.pid',
    '/var/cache/dnf/download_lock.pid',
  ],
  workFolders: ['/var/cache/dnf', '/var/lib/dnf', '/var/lib/rpm'],
  hold: (name) => ({ argv: ['dnf', '-q', '-y', 'versionlock', 'add', name] }),
  release: (name) => ({ argv: ['dnf', '-q', '-y', 'versionlock', 'delete', name] }),
});
