import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseOsRelease } from '../../src/linux/checks/os-release.js';
import { packageManagers } from '../../src/linux/package-managers/index.js';
import { describePlan, planInstall } from '../../src/linux/plan.js';
import { WRITTEN_BY } from '../../src/linux/repository.js';
import type { LinuxSettings } from '../../src/linux/settings.js';
import { osReleaseFixture } from '../fixtures.js';

const defaults: LinuxSettings = { repository: { baseUrl: undefined, keyFingerprints: [] } };
const nothing = new Map<string, string>();

async function plan(
  fixture: string,
  options: {
    architecture?: string;
    settings?: LinuxSettings;
    installed?: Map<string, string>;
  } = {},
) {
  const os = parseOsRelease(await osReleaseFixture(fixture));
  const result = planInstall(
    os,
    options.architecture ?? 'x86_64',
    options.settings ?? defaults,
    options.installed ?? nothing,
  );
  assert.ok(result, `a plan for ${fixture}`);
  return result;
}

describe('install plan: repositories', () => {
  test('Ubuntu 22.04: the jammy repository, signed-by our keyring, for amd64', async () => {
    const { repository } = await plan('ubuntu-22.04');
    assert.equal(repository.manager, 'apt');
    assert.equal(repository.target.file, '/etc/apt/sources.list.d/microsoft-prod.list');
    assert.equal(
      repository.alternatives[0]?.content,
      `${WRITTEN_BY}\ndeb [arch=amd64 signed-by=/usr/share/keyrings/aadsshlogin-microsoft-prod.gpg] https://packages.microsoft.com/repos/microsoft-ubuntu-jammy-prod jammy main\n`,
    );
  });

  test('Ubuntu 18.04 on aarch64 uses the multiarch repository', async () => {
    const { repository } = await plan('ubuntu-18.04', { architecture: 'aarch64' });
    assert.match(
      repository.alternatives[0]?.content ?? '',
      /\[arch=arm64 .*microsoft-ubuntu-bionic-multiarch-prod bionic main/,
    );
  });

  test('Debian 12 by its codename', async () => {
    const { repository } = await plan('debian-12');
    assert.equal(
      repository.alternatives[0]?.url,
      'https://packages.microsoft.com/repos/microsoft-debian-bookworm-prod',
    );
  });

  test('Oracle Linux 8 tries its own folder, then falls back to rhel; dnf on 8+, yum on 7', async () => {
    const ol = await plan('ol-8.10');
    assert.equal(ol.repository.manager, 'dnf');
    assert.deepEqual(
      ol.repository.alternatives.map((alternative) => alternative.url),
      ['https://packages.microsoft.com/ol/8/prod/', 'https://packages.microsoft.com/rhel/8/prod/'],
    );
    const rhel7 = await plan('rhel-7.9-atomic-host');
    assert.equal(rhel7.repository.manager, 'yum');
    assert.deepEqual(
      rhel7.repository.alternatives.map((alternative) => alternative.url),
      ['https://packages.microsoft.com/rhel/7/prod/'],
    );
  });

  test('an rpm repository checks package and metadata signatures against the verified key file only', async () => {
    const content = (await plan('rhel-9.4')).repository.alternatives[0]?.content ?? '';
    assert.match(content, /^\[packages-microsoft-com-prod\]$/m);
    assert.match(content, /^gpgcheck=1$/m);
    assert.match(content, /^repo_gpgcheck=1$/m);
    assert.match(
      content,
      /^gpgkey=file:\/\/\/etc\/pki\/rpm-gpg\/aadsshlogin-microsoft-prod\.asc$/m,
    );
    assert.doesNotMatch(content, /gpgkey=https?:/);
  });

  test('SLES and openSUSE use zypper with autorefresh; Leap 42.3 keeps its full version', async () => {
    const sles = await plan('sles-15.5');
    assert.equal(sles.repository.manager, 'zypper');
    assert.equal(sles.repository.target.file, '/etc/zypp/repos.d/microsoft-prod.repo');
    assert.equal(
      sles.repository.alternatives[0]?.url,
      'https://packages.microsoft.com/sles/15/prod/',
    );
    assert.match(sles.repository.alternatives[0]?.content ?? '', /^autorefresh=1$/m);
    assert.equal(
      (await plan('opensuse-leap-42.3')).repository.alternatives[0]?.url,
      'https://packages.microsoft.com/opensuse/42.3/prod/',
    );
  });

  test('CBL-Mariner 2.0 and Azure Linux 3.0 use tdnf and their own paths', async () => {
    const mariner = await plan('mariner-2.0');
    assert.equal(mariner.repository.manager, 'tdnf');
    assert.equal(
      mariner.repository.alternatives[0]?.url,
      'https://packages.microsoft.com/cbl-mariner/2.0/prod/extras/$basearch/',
    );
    const azure = await plan('azurelinux-3.0');
    assert.equal(
      azure.repository.alternatives[0]?.url,
      'https://packages.microsoft.com/azurelinux/3.0/prod/ms-non-oss/$basearch/',
    );
  });

  test("a mirror replaces packages.microsoft.com everywhere, and its fingerprints are trusted with Microsoft's", async () => {
    const settings: LinuxSettings = {
      repository: {
        baseUrl: 'http://mirror.contoso.example/pmc',
        keyFingerprints: ['0123456789ABCDEF0123456789ABCDEF01234567'],
      },
    };
    const { repository } = await plan('debian-12', { settings });
    assert.equal(
      repository.alternatives[0]?.url,
      'http://mirror.contoso.example/pmc/repos/microsoft-debian-bookworm-prod',
    );
    assert.deepEqual(repository.keys.urls, [
      'http://mirror.contoso.example/pmc/keys/microsoft.asc',
      'http://mirror.contoso.example/pmc/keys/microsoft-2025.asc',
    ]);
    assert.deepEqual(repository.keys.trustedFingerprints, [
      'BC528686B50D79E339D3721CEB3E94ADBE1229CF',
      'AA86F75E427A19DD33346403EE4D7792F748182B',
      '0123456789ABCDEF0123456789ABCDEF01234567',
    ]);
  });
});

describe('install plan: packages', () => {
  test('a fresh Ubuntu VM without SELinux: refresh only our source, then install aadsshlogin', async () => {
    const result = await plan('ubuntu-22.04');
    assert.deepEqual(result.packages.wanted, [{ name: 'aadsshlogin' }]);
    assert.deepEqual(
      result.commands.map((command) => command.argv.slice(0, 2)),
      [
        ['apt-get', 'update'],
        ['apt-get', 'install'],
      ],
    );
    assert.ok(
      result.commands[0]?.argv.includes(
        'Dir::Etc::sourcelist=/etc/apt/sources.list.d/microsoft-prod.list',
      ),
    );
    assert.ok(result.commands[1]?.argv.includes('Dpkg::Options::=--force-confold'));
    assert.equal(result.commands[1]?.env?.DEBIAN_FRONTEND, 'noninteractive');
  });

  test('with the SELinux policy package installed, aadsshlogin-selinux comes first', async () => {
    const result = await plan('rhel-9.4', {
      installed: new Map([['selinux-policy-targeted', '38.1.35-2.el9']]),
    });
    assert.deepEqual(
      result.packages.wanted.map((spec) => spec.name),
      ['aadsshlogin-selinux', 'aadsshlogin'],
    );
    assert.deepEqual(result.commands[1]?.argv, [
      'dnf',
      '-y',
      'install',
      'aadsshlogin-selinux',
      'aadsshlogin',
    ]);
  });

  test('SLES 15.5 installs and locks 1.0.027980001; 15.6 gets the latest', async () => {
    const old = await plan('sles-15.5');
    assert.deepEqual(old.packages.wanted, [{ name: 'aadsshlogin', version: '1.0.027980001' }]);
    assert.deepEqual(
      old.commands.map((command) => command.argv.join(' ')),
      [
        'zypper -q -n refresh packages-microsoft-com-prod',
        'zypper -q -n install --oldpackage aadsshlogin=1.0.027980001',
        'zypper -q -n addlock aadsshlogin',
      ],
    );
    const current = await plan('sles-15.6');
    assert.deepEqual(current.packages.wanted, [{ name: 'aadsshlogin' }]);
    assert.deepEqual(current.packages.holds, []);
  });

  test('a converged VM needs no command at all', async () => {
    const result = await plan('ubuntu-22.04', {
      installed: new Map([['aadsshlogin', '1.0.034210009']]),
    });
    assert.deepEqual(result.packages.missing, []);
    assert.deepEqual(result.commands, []);
    assert.ok(describePlan(result).includes('already installed: nothing to run'));
  });

  test('a pinned version is satisfied only by that version', async () => {
    const pinned = await plan('opensuse-leap-15.5', {
      installed: new Map([['aadsshlogin', '1.0.027980001-1']]),
    });
    assert.deepEqual(pinned.commands, []);
    const wrong = await plan('opensuse-leap-15.5', {
      installed: new Map([['aadsshlogin', '1.0.031070001-1']]),
    });
    assert.equal(wrong.packages.missing.length, 1);
  });

  test('the plan prints what would be written, trusted and run', async () => {
    const lines = describePlan(await plan('sles-15.5'));
    assert.ok(lines.includes('package manager: zypper'));
    assert.ok(lines.includes('hold: aadsshlogin'));
    assert.ok(
      lines.some((line) =>
        line.startsWith('run: zypper -q -n install --oldpackage aadsshlogin=1.0.027980001'),
      ),
    );
  });
});

describe('package managers', () => {
  test('packages dpkg holds halfway are present for removal, not installed', () => {
    const answer = [
      'aadsshlogin\tinstall ok half-configured\t1.0.031070001',
      'aadsshlogin-selinux\tinstall reinstreq half-installed\t1.0.031070001',
      'aadlogin\tdeinstall ok config-files\t1.0.016050002',
      'selinux-policy-default\tunknown ok not-installed\t',
      'libc6\tinstall ok installed\t2.36-9',
      '',
    ].join('\n');
    assert.deepEqual(packageManagers.apt.parseInstalled(answer), new Map([['libc6', '2.36-9']]));
    assert.deepEqual(
      packageManagers.apt.parsePresent(answer),
      new Set(['aadsshlogin', 'aadsshlogin-selinux', 'aadlogin', 'libc6']),
    );
    assert.deepEqual(
      packageManagers.dnf.parsePresent('aadsshlogin\t1.0-1\npackage x is not installed\n'),
      new Set(['aadsshlogin']),
    );
  });

  test('dpkg-query and rpm answers are read into installed versions', () => {
    assert.deepEqual(
      packageManagers.apt.parseInstalled(
        'aadsshlogin\tinstall ok installed\t1.0.031070001\naadsshlogin-selinux\tdeinstall ok config-files\t1.0\n',
      ),
      new Map([['aadsshlogin', '1.0.031070001']]),
    );
    assert.deepEqual(
      packageManagers.dnf.parseInstalled(
        'aadsshlogin\t1.0.027980001-1\npackage aadsshlogin-selinux is not installed\n',
      ),
      new Map([['aadsshlogin', '1.0.027980001-1']]),
    );
  });

  test('every manager removes and holds by argument array, never through a shell', () => {
    for (const manager of Object.values(packageManagers)) {
      const remove = manager.remove(['aadsshlogin', 'aadsshlogin-selinux']).argv;
      assert.deepEqual(remove.slice(-2), ['aadsshlogin', 'aadsshlogin-selinux'], manager.name);
      assert.ok(!remove.some((argument) => /[;&|`$]/.test(argument)), manager.name);
      assert.ok(manager.lockFiles.length > 0, manager.name);
    }
    assert.throws(() => packageManagers.tdnf.hold('aadsshlogin'), /cannot hold/);
  });

  test('a lock taken after our wait is waited for by the tool itself, not failed at once', () => {
    const { apt, zypper } = packageManagers;
    const spec = [{ name: 'aadsshlogin' }];
    const repository = { file: '/etc/zypp/repos.d/microsoft-prod.repo', id: 'microsoft-prod' };
    assert.ok(apt.install(spec, repository).argv.includes('DPkg::Lock::Timeout=60'));
    for (const command of [
      zypper.refresh(repository),
      zypper.install(spec, repository),
      zypper.remove(['aadsshlogin']),
      zypper.hold('aadsshlogin'),
      zypper.release('aadsshlogin'),
    ]) {
      assert.equal(command.env?.ZYPP_LOCK_TIMEOUT, '60', command.argv.join(' '));
    }
  });
});
