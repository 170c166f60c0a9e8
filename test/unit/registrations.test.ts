import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  authorizedKeysCommandWarnings,
  checkNsswitch,
  checkPam,
  checkSelinux,
  checkSshd,
  opensshWarning,
  pamLocalChange,
  sshdWarnings,
} from '../../src/linux/registrations.js';

/** The block aadsshlogin appends to sshd_config. */
const AAD_MATCH_BLOCK = `Match User *@*,????????-????-????-????-???????????? # Added by aadsshlogin installer
    AuthenticationMethods publickey
    PubkeyAuthentication yes
    AuthorizedKeysCommand /usr/sbin/aad_certhandler %u %k
    AuthorizedKeysCommandUser root
`;

const UBUNTU_SSHD = `Include /etc/ssh/sshd_config.d/*.conf
KbdInteractiveAuthentication no
UsePAM yes
X11Forwarding yes
PrintMotd no
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
`;

describe('registrations', () => {
  test('sshd: the Match block with AuthorizedKeysCommand counts, in the main file or an included one', () => {
    assert.equal(
      checkSshd([{ file: '/etc/ssh/sshd_config', text: UBUNTU_SSHD + AAD_MATCH_BLOCK }]),
      undefined,
    );
    assert.equal(
      checkSshd([
        { file: '/etc/ssh/sshd_config', text: UBUNTU_SSHD },
        { file: '/etc/ssh/sshd_config.d/50-aad.conf', text: AAD_MATCH_BLOCK },
      ]),
      undefined,
    );
  });

  test('sshd: missing, commented out, or another command is a problem naming the file', () => {
    for (const text of [
      UBUNTU_SSHD,
      `${UBUNTU_SSHD}#AuthorizedKeysCommand /usr/sbin/aad_certhandler %u %k\n`,
      `${UBUNTU_SSHD}AuthorizedKeysCommand /usr/bin/other %u\n`,
    ]) {
      const problem = checkSshd([{ file: '/etc/ssh/sshd_config', text }]);
      assert.equal(problem?.what, 'sshd');
      assert.match(
        problem?.message ?? '',
        /^\/etc\/ssh\/sshd_config has no "AuthorizedKeysCommand \/usr\/sbin\/aad_certhandler"/,
      );
    }
  });

  test('nsswitch: aad among the passwd sources', () => {
    assert.equal(
      checkNsswitch('/etc/nsswitch.conf', 'passwd:         files aad systemd\ngroup: files aad\n'),
      undefined,
    );
    assert.match(
      checkNsswitch('/etc/nsswitch.conf', 'passwd: files systemd\n# passwd: files aad\n')
        ?.message ?? '',
      /does not list "aad" for passwd/,
    );
  });

  test('PAM: pam_aad in any file; the remedy names pam-auth-update', () => {
    assert.equal(
      checkPam([
        { file: '/etc/pam.d/common-auth', text: 'auth [success=1 default=ignore] pam_unix.so\n' },
        {
          file: '/etc/pam.d/common-account',
          text: 'account [success=done new_authtok_reqd=done default=ignore] pam_aad.so\n',
        },
      ]),
      undefined,
    );
    assert.match(
      checkPam([{ file: '/etc/pam.d/sshd', text: '# pam_aad.so\n' }])?.message ?? '',
      /pam-auth-update --force/,
    );
  });

  test('SELinux: aad_permissions in semodule -l', () => {
    assert.equal(checkSelinux('aad_permissions\t1.0\nabrt\n'), undefined);
    assert.equal(checkSelinux('abrt\naccountsd\n')?.what, 'selinux');
  });

  test('AllowGroups/DenyGroups outside a Match block warn; inside one they do not', () => {
    assert.equal(
      sshdWarnings(
        '/etc/ssh/sshd_config',
        `${UBUNTU_SSHD}Match Group admins\n  AllowGroups admins\n`,
      ).length,
      0,
    );
    const warnings = sshdWarnings(
      '/etc/ssh/sshd_config',
      `AllowGroups ssh-users\nDenyGroups=guests\n${UBUNTU_SSHD}`,
    );
    assert.equal(warnings.length, 2);
    assert.match(warnings[0] ?? '', /AllowGroups outside a Match block/);
  });

  test('OpenSSH older than 7.8 warns, by package version or ssh -V; 7.8 and later do not', () => {
    for (const version of [
      '7.4p1-22.el7_9',
      '1:7.4p1-10+deb9u7',
      '1:7.2p2-4ubuntu2.10',
      '7.2p2-81.1',
      'OpenSSH_7.4p1, OpenSSL 1.0.2k-fips  26 Jan 2017',
    ]) {
      assert.match(
        opensshWarning(version) ?? '',
        /^OpenSSH 7\.[24] is older than 7\.8: .*Update/,
        version,
      );
    }
    for (const version of [
      '1:9.2p1-2+deb12u3',
      '7.8p1-1',
      '8.0p1-19.el8_8',
      '1:10.0p1-1',
      'OpenSSH_9.2p1 Debian-2+deb12u3, OpenSSL 3.0.15 3 Sep 2024',
      'unknown',
    ]) {
      assert.equal(opensshWarning(version), undefined, version);
    }
  });

  test("an AuthorizedKeysCommand other than aadsshlogin's warns, naming the file, line and remedy", () => {
    const text = `${UBUNTU_SSHD}AuthorizedKeysCommand /usr/bin/sss_ssh_authorizedkeys %u\nAuthorizedKeysCommandUser nobody\n${AAD_MATCH_BLOCK}`;
    const warnings = authorizedKeysCommandWarnings('/etc/ssh/sshd_config', text);
    assert.equal(warnings.length, 1);
    assert.match(
      warnings[0] ?? '',
      /^\/etc\/ssh\/sshd_config line 8 sets AuthorizedKeysCommand \/usr\/bin\/sss_ssh_authorizedkeys, which is not aadsshlogin's .*Match block that excludes Entra ID users/,
    );
    // aadsshlogin's own, "none", and commented-out lines are no conflict.
    assert.deepEqual(
      authorizedKeysCommandWarnings(
        '/etc/ssh/sshd_config.d/50-x.conf',
        `${AAD_MATCH_BLOCK}AuthorizedKeysCommand none\n#AuthorizedKeysCommand /usr/bin/other\n`,
      ),
      [],
    );
  });

  test('AllowGroups warnings name the line', () => {
    assert.match(
      sshdWarnings('/etc/ssh/sshd_config', `${UBUNTU_SSHD}AllowGroups admins\n`)[0] ?? '',
      /^\/etc\/ssh\/sshd_config line 8 sets AllowGroups/,
    );
  });
});

/** /etc/pam.d/common-account and /var/lib/pam/account as Debian 12's pam-auth-update writes them. */
const COMMON_ACCOUNT = `#
# /etc/pam.d/common-account - authorization settings common to all services
#
# here are the per-package modules (the "Primary" block)
account	[success=1 new_authtok_reqd=done default=ignore]	pam_unix.so 
# here's the fallback if no module succeeds
account	requisite			pam_deny.so
account	required			pam_permit.so
# and here are more per-package modules (the "Additional" block)
# end of pam-auth-update config
`;
const SAVED_ACCOUNT =
  'Module: unix\n[success=end new_authtok_reqd=done default=ignore]\tpam_unix.so\n';

const COMMON_AUTH = `# here are the per-package modules (the "Primary" block)
auth	[success=2 default=ignore]	pam_unix.so nullok
auth	[success=1 default=ignore]	pam_aad.so
# here's the fallback if no module succeeds
auth	requisite			pam_deny.so
auth	required			pam_permit.so
# and here are more per-package modules (the "Additional" block)
auth	optional			pam_cap.so 
# end of pam-auth-update config
auth required pam_local_after_the_block.so
`;
const SAVED_AUTH = `Module: unix
[success=end default=ignore]	pam_unix.so nullok
Module: aad
[success=end default=ignore]	pam_aad.so
Module: capability
optional			pam_cap.so
`;

describe('pam-auth-update local changes (its own diff_profiles rules)', () => {
  test('files as pam-auth-update wrote them, with changed options or lines outside its blocks, are not local changes', () => {
    assert.equal(pamLocalChange('account', COMMON_ACCOUNT, SAVED_ACCOUNT), undefined);
    assert.equal(pamLocalChange('auth', COMMON_AUTH, SAVED_AUTH), undefined);
    // pam-auth-update merges a changed option (it keeps "debug"), so no refusal.
    assert.equal(
      pamLocalChange(
        'auth',
        COMMON_AUTH.replace('pam_unix.so nullok', 'pam_unix.so nullok debug'),
        SAVED_AUTH,
      ),
      undefined,
    );
    // A module dropped by hand is merged too (its saved line is skipped).
    assert.equal(
      pamLocalChange(
        'auth',
        COMMON_AUTH.replace('auth\toptional\t\t\tpam_cap.so \n', ''),
        SAVED_AUTH,
      ),
      undefined,
    );
    assert.equal(
      pamLocalChange('auth', undefined, SAVED_AUTH),
      undefined,
      'no file, nothing to say',
    );
  });

  test('a line added inside a block, a missing marker, or no saved record is a local change, named with the remedy', () => {
    const added = pamLocalChange(
      'auth',
      COMMON_AUTH.replace(
        "# here's the fallback",
        "auth sufficient pam_sss.so\n# here's the fallback",
      ),
      SAVED_AUTH,
    );
    assert.match(
      added ?? '',
      /^\/etc\/pam\.d\/common-auth line 4 \("auth sufficient pam_sss\.so"\), inside the block pam-auth-update manages, is not what it wrote \(see \/var\/lib\/pam\/auth\).*pam-auth-update --force/,
    );
    assert.match(
      pamLocalChange(
        'account',
        COMMON_ACCOUNT.replace(/^# and here are more.*$/m, ''),
        SAVED_ACCOUNT,
      ) ?? '',
      /lacks the markers/,
    );
    assert.match(
      pamLocalChange('account', COMMON_ACCOUNT, undefined) ?? '',
      /\/var\/lib\/pam\/account, .* is missing/,
    );
    // A module swapped for another in place is not pam-auth-update's either.
    assert.match(
      pamLocalChange(
        'account',
        COMMON_ACCOUNT.replace('pam_unix.so', 'pam_ldap.so'),
        SAVED_ACCOUNT,
      ) ?? '',
      /line 5/,
    );
  });
});
