/**
 * The substatus list of the built AADSSHLoginForLinux zip's install and enable, in test VMs
 * (vm.ts): one entry per check and step, in order, every time; a failing step as an error with its
 * code and the steps after it marked as not run; the warnings as warnings with exit 0. Every
 * status file is judged by the agent's own code (`agentStatus`). The README's "Status examples"
 * are the status files of two of these runs: this test compares them with the real output
 * (timestamps, the mirror's address and its key normalised), so they cannot drift. After a
 * deliberate change, `UPDATE_STATUS_EXAMPLES=1` writes the new output into the README instead.
 * Assumes `npm run package` ran.
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { before, describe, test } from 'node:test';
import { CHECKS } from '../../src/linux/checks/index.js';
import { CONVERGE_STEPS } from '../../src/linux/installer.js';
import {
  assertExit,
  extensionVersionOf,
  type HandlerInstance,
  LINUX_HANDLER_NAME,
  requireZip,
  type ValidStatus,
} from './agent-driver.js';
import { buildDeb } from './repos.js';
import { type LinuxVm, unpackHandler, withLinuxVm } from './vm.js';

const version = extensionVersionOf();
let zip = '';

before(async () => {
  zip = await requireZip(LINUX_HANDLER_NAME);
});

/** Every check and step of install and enable, in the order of their substatus entries. */
const ALL_STEPS = [...CHECKS, ...CONVERGE_STEPS];
const WARNINGS = ['SshdGroups', 'AuthorizedKeysCommand', 'OpenSshVersion', 'PamLocalChanges'];

const README = new URL('../../README.md', import.meta.url);
const EXAMPLES_SECTION = '## Status examples';

/** Unpacks the zip into the VM's agent folder with settings for sequence number 0. */
function handlerIn(
  vm: LinuxVm,
  publicSettings: Record<string, unknown> = vm.publicSettings,
): Promise<HandlerInstance> {
  return unpackHandler(vm, zip, version, publicSettings);
}

function entries(status: ValidStatus): [string | null, string, number][] {
  return status.substatus.map((entry) => [entry.name, entry.status, entry.code]);
}

/**
 * The status file as the README shows it: pretty-printed, with the run's timestamps, the memory
 * of the machine running the test, the test mirror's address and its throwaway key's fingerprint
 * replaced by fixed text.
 */
function normalised(vm: LinuxVm, text: string): string {
  const replace = (value: string) =>
    value
      .replace(/^[\d.]+ [GM]iB \(MemTotal \d+ kB\)\.$/, '7.75 GiB (MemTotal 8126464 kB).')
      .replaceAll(vm.server.url, 'https://mirror.example.com')
      .replaceAll(vm.repository.signingKey.fingerprint, '<fingerprint of the mirror key>');
  const walk = (value: unknown): unknown => {
    if (typeof value === 'string') return replace(value);
    if (Array.isArray(value)) return value.map(walk);
    if (value && typeof value === 'object') {
      return Object.fromEntries(
        Object.entries(value).map(([key, inner]) => [
          key,
          key === 'timestampUTC' || key === 'configurationAppliedTime'
            ? '2026-01-01T00:00:00Z'
            : walk(inner),
        ]),
      );
    }
    return value;
  };
  return JSON.stringify(walk(JSON.parse(text)), null, 2);
}

/** The JSON block under `### <heading>` in the README's status examples. */
function exampleBlock(readme: string, heading: string): { start: number; end: number } {
  const section = readme.indexOf(`\n${EXAMPLES_SECTION}\n`);
  assert.ok(section >= 0, `README.md has a "${EXAMPLES_SECTION}" section`);
  const at = readme.indexOf(`\n### ${heading}\n`, section);
  assert.ok(at >= 0, `README.md's status examples have "### ${heading}"`);
  const start = readme.indexOf('```json\n', at) + '```json\n'.length;
  const end = readme.indexOf('```', start);
  assert.ok(start > at && end >= start, `a json block under "### ${heading}"`);
  return { start, end };
}

/** Compares the README's example with the real status file, or writes it when asked to. */
async function matchesReadme(heading: string, actual: string): Promise<void> {
  const readme = await readFile(README, 'utf8');
  const { start, end } = exampleBlock(readme, heading);
  if (process.env.UPDATE_STATUS_EXAMPLES) {
    await writeFile(README, `${readme.slice(0, start)}${actual}\n${readme.slice(end)}`);
    return;
  }
  assert.equal(
    readme.slice(start, end),
    `${actual}\n`,
    `README.md's "${heading}" is the real status file (UPDATE_STATUS_EXAMPLES=1 rewrites it)`,
  );
}

describe('substatus entries of install and enable', () => {
  test('a fresh install and the enable after it: one successful entry per check and step, in order', async () => {
    await withLinuxVm({ kind: 'debian', label: 'substatus' }, async (vm) => {
      const handler = await handlerIn(vm);
      assertExit(await handler.run('install', { seq: 0 }), 0);
      const install = await handler.agentStatus(0);
      assert.deepEqual(
        entries(install),
        ALL_STEPS.map((name) => [name, 'success', 0]),
      );
      assert.match(install.message, /aadsshlogin was installed and is registered\./);
      // Debian 12's own pam-auth-update files, untouched: no local change.
      assert.match(
        install.substatus.find((entry) => entry.name === 'PamLocalChanges')?.message ?? '',
        /without local changes/,
      );

      assertExit(await handler.run('enable', { seq: 0 }), 0);
      const enable = await handler.agentStatus(0);
      assert.deepEqual(
        entries(enable),
        ALL_STEPS.map((name) => [name, 'success', 0]),
      );
      assert.match(
        enable.message,
        /^Enable succeeded: the VM passed the checks; aadsshlogin is installed and registered; nothing needed changing\./,
      );
      assert.match(
        enable.substatus.find((entry) => entry.name === 'Install')?.message ?? '',
        /^Nothing to install: aadsshlogin already installed\.$/,
      );
    });
  });

  test('a failing install (an untrusted key, 27): the failing step is an error with its code, the later ones not run', async () => {
    await withLinuxVm({ kind: 'debian', label: 'substatus-27' }, async (vm) => {
      const handler = await handlerIn(vm, { repository: { baseUrl: vm.server.url } });
      assertExit(await handler.run('install', { seq: 0 }), 27);
      const status = await handler.agentStatus(0);
      assert.equal(status.status, 'error');
      assert.equal(status.code, 27);
      const failed = ALL_STEPS.indexOf('RepositoryKeys');
      assert.deepEqual(
        entries(status),
        ALL_STEPS.map((name, index) => [
          name,
          index < failed ? 'success' : index === failed ? 'error' : 'transitioning',
          index === failed ? 27 : 0,
        ]),
      );
      for (const entry of status.substatus.slice(failed + 1)) {
        assert.equal(entry.message, 'Not run: RepositoryKeys failed first.');
      }
      await matchesReadme(
        'A failing install: the repository key is not trusted (exit 27)',
        normalised(vm, status.text),
      );
    });
  });

  test('an install with warnings (AllowGroups, a foreign AuthorizedKeysCommand, OpenSSH 7.4, a local PAM edit): warning entries, exit 0', async () => {
    await withLinuxVm({ kind: 'debian', label: 'substatus-warn' }, async (vm) => {
      await vm.root.writeFile(
        '/etc/ssh/sshd_config',
        [
          'Include /etc/ssh/sshd_config.d/*.conf',
          'UsePAM yes',
          'AllowGroups sshusers',
          'Match Group legacy',
          '    AuthorizedKeysCommand /usr/bin/sss_ssh_authorizedkeys %u',
          '    AuthorizedKeysCommandUser nobody',
          'Match all',
          '',
        ].join('\n'),
      );
      // OpenSSH 7.4 as on Debian 9 or RHEL 7; its epoch 2 keeps Debian 12's libc6, which breaks
      // openssh-server << 1:8.1p1-5, from refusing it.
      const openssh = await buildDeb({ name: 'openssh-server', version: '2:7.4p1' });
      await vm.root.writeFile('/tmp/openssh-server.deb', await readFile(openssh));
      const dpkg = await vm.world.exec(['dpkg', '-i', '/tmp/openssh-server.deb']);
      assert.equal(dpkg.exitCode, 0, dpkg.stderr);
      // A line added by hand inside the block pam-auth-update manages.
      const account = (await vm.root.readFile('/etc/pam.d/common-account')) ?? '';
      const marker = '# here are the per-package modules (the "Primary" block)\n';
      assert.ok(account.includes(marker), 'Debian 12 common-account has the marker');
      await vm.root.writeFile(
        '/etc/pam.d/common-account',
        account.replace(marker, `${marker}account\tsufficient\tpam_localuser.so\n`),
      );

      const handler = await handlerIn(vm);
      assertExit(await handler.run('install', { seq: 0 }), 0);
      const status = await handler.agentStatus(0);
      assert.equal(status.status, 'success');
      assert.deepEqual(
        entries(status),
        ALL_STEPS.map((name) => [name, WARNINGS.includes(name) ? 'warning' : 'success', 0]),
      );
      const message = (name: string) =>
        status.substatus.find((entry) => entry.name === name)?.message ?? '';
      assert.match(message('SshdGroups'), /^\/etc\/ssh\/sshd_config line 3 sets AllowGroups/);
      assert.match(
        message('AuthorizedKeysCommand'),
        /^\/etc\/ssh\/sshd_config line 5 sets AuthorizedKeysCommand \/usr\/bin\/sss_ssh_authorizedkeys/,
      );
      assert.match(
        message('OpenSshVersion'),
        /^openssh-server 2:7\.4p1 is installed\. OpenSSH 7\.4 is older than 7\.8/,
      );
      assert.match(
        message('PamLocalChanges'),
        /^\/etc\/pam\.d\/common-account line \d+ \("account\tsufficient\tpam_localuser\.so"\)/,
      );
      assert.match(status.message, /4 warnings, see the substatus entries/);
      await matchesReadme('An install with warnings (exit 0)', normalised(vm, status.text));
    });
  });
});
