import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  checkNsswitch,
  checkPam,
  checkSelinux,
  checkSshd,
  opensshWarning,
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

  test('OpenSSH older than 7.8 warns', () => {
    assert.match(
      opensshWarning('OpenSSH_7.4p1, OpenSSL 1.0.2k-fips  26 Jan 2017') ?? '',
      /7\.4 is older than 7\.8/,
    );
    assert.equal(
      opensshWarning('OpenSSH_9.2p1 Debian-2+deb12u3, OpenSSL 3.0.15 3 Sep 2024'),
      undefined,
    );
    assert.equal(opensshWarning('OpenSSH_7.8p1'), undefined);
  });
});
