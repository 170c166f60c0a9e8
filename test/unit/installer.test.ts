import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { HandlerFailure } from '../../src/failures.js';
import type { FetchResult } from '../../src/io/http.js';
import { emptyState, type HandlerState } from '../../src/lifecycle/state.js';
import { parseOsRelease } from '../../src/linux/checks/os-release.js';
import { converge, type InstallJob, removeInstallation } from '../../src/linux/installer.js';
import { failureLines, readInstallation } from '../../src/linux/journal.js';
import { armor, dearmor, publicKeys } from '../../src/linux/keys.js';
import type { Machine } from '../../src/linux/machine.js';
import { KEY_FILE, WRITTEN_BY } from '../../src/linux/repository.js';
import { parseLinuxSettings } from '../../src/linux/settings.js';
import { fakeClock, memoryFiles, memoryLog, temporaryFolder } from '../fakes.js';
import { osReleaseFixture } from '../fixtures.js';

/**
 * The installer against a VM in memory: files in a map, a package database the fake apt-get,
 * dpkg, rpm, dnf and zypper change, and the repository's keys served from a map. The same
 * scenarios run on the real package managers in test/package/.
 */

let home: { dir: string; cleanup(): Promise<void> };
let trustedArmored = '';
let trustedFingerprint = '';
let otherArmored = '';

before(async () => {
  home = await temporaryFolder();
  const gpg = (args: string[]) =>
    execFileSync('gpg', ['--homedir', home.dir, '--batch', '--quiet', ...args], {
      stdio: ['pipe', 'pipe', 'ignore'],
    }).toString('utf8');
  for (const name of ['Mirror <mirror@example.test>', 'Stranger <stranger@example.test>']) {
    gpg(['--passphrase', '', '--quick-gen-key', name, 'ed25519', 'sign', '1d']);
  }
  trustedArmored = gpg(['--armor', '--export', 'mirror@example.test']);
  otherArmored = gpg(['--armor', '--export', 'stranger@example.test']);
  trustedFingerprint =
    gpg(['--with-colons', '--list-keys', 'mirror@example.test'])
      .split('\n')
      .find((line) => line.startsWith('fpr:'))
      ?.split(':')[9] ?? '';
});
after(async () => home.cleanup());

const BASE = 'http://mirror.example.test';
const REGISTRATIONS = {
  '/etc/ssh/sshd_config':
    'Match User *@*\n    AuthorizedKeysCommand /usr/sbin/aad_certhandler %u %k\n',
  '/etc/nsswitch.conf': 'passwd: files aad\ngroup: files aad\n',
  '/etc/pam.d/common-auth': 'auth optional pam_aad.so\n',
};

interface FakeVm {
  machine: Machine;
  files: Map<string, Buffer>;
  installed: Map<string, string>;
  commands: string[];
  fetched: string[];
}

function fakeVm(
  options: {
    files?: Record<string, string>;
    installed?: Record<string, string>;
    answers?: Record<string, { status: number; body?: string } | 'unreachable'>;
    /** argv (joined) prefixes that fail. */
    failing?: string[];
    /** argv (joined) prefixes that fail `times` times with exit 100 and this `stderr`. */
    flaky?: { prefix: string; times: number; stderr: string }[];
    /** Whether installing aadsshlogin writes the registrations. */
    registers?: boolean;
  } = {},
): FakeVm {
  const files = new Map(
    Object.entries(options.files ?? {}).map(([file, text]) => [file, Buffer.from(text)]),
  );
  const installed = new Map(Object.entries(options.installed ?? {}));
  const commands: string[] = [];
  const fetched: string[] = [];
  const clock = fakeClock();
  const install = (spec: string) => {
    const [name = spec, version = '1.0.031070001'] = spec.split(/=|-(?=\d)/);
    installed.set(name, version);
    if (name === 'aadsshlogin' && options.registers !== false) {
      for (const [file, text] of Object.entries(REGISTRATIONS)) files.set(file, Buffer.from(text));
    }
  };
  const machine: Machine = {
    ...memoryFiles(files),
    clock,
    proxyEnvironment: {},
    lockProbe: { readText: async () => '', identity: async () => undefined },
    fetchText: async (url): Promise<FetchResult> => {
      fetched.push(url);
      const answer = options.answers?.[url];
      if (answer === 'unreachable') return { ok: false, problem: `${url}: connect ECONNREFUSED` };
      if (answer) return { ok: true, answer: { status: answer.status, body: answer.body ?? '' } };
      if (url === `${BASE}/keys/microsoft.asc`) {
        return { ok: true, answer: { status: 200, body: trustedArmored } };
      }
      if (url.endsWith('/repodata/repomd.xml') && url.includes('/rhel/')) {
        return { ok: true, answer: { status: 200, body: '<repomd/>' } };
      }
      return { ok: true, answer: { status: 404, body: 'not found' } };
    },
    processes: {
      async run(file, args) {
        const line = [file, ...args].join(' ');
        commands.push(line);
        const flaky = options.flaky?.find((f) => line.startsWith(f.prefix) && f.times > 0);
        if (flaky) {
          flaky.times -= 1;
          return { exitCode: 100, stdout: '', stderr: flaky.stderr };
        }
        if (options.failing?.some((prefix) => line.startsWith(prefix))) {
          return { exitCode: 100, stdout: '', stderr: `E: ${file} failed on purpose\n` };
        }
        const names = args.filter((arg) => !arg.startsWith('-'));
        switch (file) {
          case 'dpkg-query':
            return {
              exitCode: 0,
              stdout: names
                .filter((name) => installed.has(name))
                .map((name) => `${name}\tinstall ok installed\t${installed.get(name)}\n`)
                .join(''),
              stderr: '',
            };
          case 'rpm':
            if (args[0] === '-q' && args[1] === '--qf') {
              return {
                exitCode: 0,
                stdout: args
                  .slice(3)
                  .map((name) =>
                    installed.has(name)
                      ? `${name}\t${installed.get(name)}-1\n`
                      : `package ${name} is not installed\n`,
                  )
                  .join(''),
                stderr: '',
              };
            }
            if (args[0] === '-q')
              return { exitCode: installed.has(args[1] ?? '') ? 0 : 1, stdout: '', stderr: '' };
            if (args[0] === '--import') {
              installed.set(`gpg-pubkey-${trustedFingerprint.slice(-8).toLowerCase()}`, 'key');
            }
            if (args[0] === '-e') installed.delete(args.at(-1) ?? '');
            return { exitCode: 0, stdout: '', stderr: '' };
          case 'apt-get':
          case 'dnf':
          case 'zypper':
            if (args.includes('install')) {
              for (const spec of names.slice(names.indexOf('install') + 1)) install(spec);
            }
            if (args.includes('remove')) {
              for (const name of names.slice(names.indexOf('remove') + 1)) installed.delete(name);
            }
            return { exitCode: 0, stdout: '', stderr: '' };
          case 'dpkg':
            for (const name of names) installed.delete(name);
            return { exitCode: 0, stdout: '', stderr: '' };
          default:
            return { exitCode: 0, stdout: '', stderr: '' };
        }
      },
    },
  };
  return { machine, files, installed, commands, fetched };
}

async function job(
  vm: FakeVm,
  osName: string,
  publicSettings: Record<string, unknown> = {},
  start: HandlerState = emptyState(),
): Promise<InstallJob & { state(): HandlerState; log: ReturnType<typeof memoryLog> }> {
  let state = start;
  const log = memoryLog();
  return {
    machine: vm.machine,
    os: parseOsRelease(await osReleaseFixture(osName)),
    architecture: 'x86_64',
    settings: parseLinuxSettings({
      repository: { baseUrl: BASE, keyFingerprints: [trustedFingerprint], ...publicSettings },
    }).settings,
    log,
    signal: new AbortController().signal,
    remainingMs: () => 250_000,
    saveState: async (change) => {
      state = change(state);
      return state;
    },
    state: () => state,
  };
}

const LIST = '/etc/apt/sources.list.d/microsoft-prod.list';
const REPO = '/etc/yum.repos.d/microsoft-prod.repo';
const installs = (vm: FakeVm) =>
  vm.commands.filter((line) => / install | --purge | remove |addlock|versionlock/.test(line));

async function failure(promise: Promise<unknown>): Promise<HandlerFailure> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof HandlerFailure, String(error));
    return error;
  }
  assert.fail('expected a failure');
}

describe('converge on Debian (apt)', () => {
  test('a fresh VM: trusted key only, our source file, refresh, install, all recorded', async () => {
    const vm = fakeVm();
    const run = await job(vm, 'debian-12');
    const result = await converge(run);
    assert.match(vm.files.get(LIST)?.toString() ?? '', new RegExp(`^${WRITTEN_BY}`));
    assert.match(
      vm.files.get(LIST)?.toString() ?? '',
      /deb \[arch=amd64 signed-by=\/usr\/share\/keyrings\/aadsshlogin-microsoft-prod.gpg\] http:\/\/mirror.example.test\/repos\/microsoft-debian-bookworm-prod bookworm main/,
    );
    assert.ok(vm.files.get(KEY_FILE.apt)?.length, 'the keyring is written');
    assert.deepEqual(installs(vm).length, 1);
    assert.equal(vm.installed.get('aadsshlogin'), '1.0.031070001');
    const installation = readInstallation(run.state());
    assert.deepEqual(installation.packages, ['aadsshlogin']);
    assert.deepEqual(
      installation.files?.map((file) => file.path),
      [KEY_FILE.apt, LIST],
    );
    assert.deepEqual(run.state().journal, []);
    assert.ok(result.steps.some((step) => step.name === 'Registrations'));
    assert.ok(run.log.lines.some((line) => line.message.startsWith('Plan: ')));
  });

  test('a converged VM: one query, no network, nothing run', async () => {
    const vm = fakeVm();
    await converge(await job(vm, 'debian-12'));
    vm.commands.length = 0;
    vm.fetched.length = 0;
    const again = await job(vm, 'debian-12');
    const result = await converge(again);
    assert.deepEqual(
      vm.commands.map((line) => line.split(' ')[0]),
      ['dpkg-query'],
    );
    assert.deepEqual(vm.fetched, []);
    assert.match(result.summary, /nothing changed/);
  });

  test('a key with another fingerprint: 27, nothing written, nothing installed', async () => {
    const vm = fakeVm({
      answers: { [`${BASE}/keys/microsoft.asc`]: { status: 200, body: otherArmored } },
    });
    const error = await failure(converge(await job(vm, 'debian-12')));
    assert.equal(error.code, 27);
    assert.match(error.detail, /none of which is trusted/);
    assert.equal(vm.files.size, 0);
    assert.deepEqual(installs(vm), []);
  });

  test('the repository answering 500 (after retries) or unreachable: 20, nothing changed', async () => {
    for (const answer of [{ status: 500 }, 'unreachable'] as const) {
      const vm = fakeVm({ answers: { [`${BASE}/keys/microsoft.asc`]: answer } });
      const error = await failure(converge(await job(vm, 'debian-12')));
      assert.equal(error.code, 20);
      assert.match(error.detail, /mirror\.example\.test\/keys\/microsoft\.asc/);
      assert.equal(vm.files.size, 0);
    }
  });

  test('apt turned away by a rate limit (429) is run again after a wait; a 503 is not', async () => {
    const throttled =
      'E: Failed to fetch http://mirror.example.test/repos/microsoft-debian-bookworm-prod/dists/bookworm/InRelease  429  Too Many Requests [IP: 10.0.0.1 80]\nE: Some index files failed to download.\n';
    const vm = fakeVm({
      flaky: [
        { prefix: 'apt-get update', times: 2, stderr: throttled },
        { prefix: 'apt-get install', times: 1, stderr: throttled.replace('dists', 'pool') },
      ],
    });
    const run = await job(vm, 'debian-12');
    const started = vm.machine.clock.now().getTime();
    await converge(run);
    assert.equal(vm.installed.get('aadsshlogin'), '1.0.031070001');
    assert.equal(vm.commands.filter((line) => line.startsWith('apt-get update')).length, 3);
    assert.equal(vm.commands.filter((line) => line.startsWith('apt-get install')).length, 2);
    const waits = run.log.lines
      .map((line) => /running it again in (\d+) ms/.exec(line.message)?.[1])
      .filter((wait) => wait !== undefined)
      .map(Number);
    assert.equal(waits.length, 3);
    assert.ok(waits[0] !== undefined && waits[0] >= 2_500 && waits[0] <= 5_000, `${waits[0]}`);
    assert.ok(waits[1] !== undefined && waits[1] >= 5_000 && waits[1] <= 10_000, `${waits[1]}`);
    assert.ok(vm.machine.clock.now().getTime() - started >= 7_500, 'the waits were slept');

    const failing = fakeVm({
      flaky: [
        {
          prefix: 'apt-get update',
          times: 1,
          stderr: throttled.replace('429  Too Many Requests', '503  Service Unavailable'),
        },
      ],
    });
    const error = await failure(converge(await job(failing, 'debian-12')));
    assert.equal(error.code, 20);
    assert.equal(failing.commands.filter((line) => line.startsWith('apt-get update')).length, 1);
  });

  test('a rate limit past the deadline: the last answer is reported (20), nothing left', async () => {
    const vm = fakeVm({
      flaky: [
        {
          prefix: 'dnf -y --disablerepo',
          times: 1000,
          stderr:
            "Errors during downloading metadata for repository 'packages-microsoft-com-prod':\n  - Status code: 429 for http://mirror.example.test/rhel/9/prod/repodata/repomd.xml (IP: 10.0.0.1)\nError: Failed to download metadata for repo 'packages-microsoft-com-prod': Cannot download repomd.xml: Cannot download repodata/repomd.xml: All mirrors were tried\n",
        },
      ],
    });
    const run = await job(vm, 'rhel-9.4');
    const started = vm.machine.clock.now().getTime();
    const deadline = started + 250_000;
    const error = await failure(
      converge({ ...run, remainingMs: () => deadline - vm.machine.clock.now().getTime() }),
    );
    assert.equal(error.code, 20);
    assert.match(error.detail, /Error: Failed to download metadata/);
    const runs = vm.commands.filter((line) => line.startsWith('dnf -y --disablerepo')).length;
    assert.ok(runs >= 4, `ran ${runs} times`);
    assert.ok(
      deadline - vm.machine.clock.now().getTime() >= 60_000,
      'a minute of the deadline kept',
    );
    assert.equal(vm.files.size, 0, [...vm.files.keys()].join(', '));
  });

  test('the install failing: 28 with the tool message, and the source file and key removed again', async () => {
    const vm = fakeVm({ failing: ['apt-get install'] });
    const run = await job(vm, 'debian-12');
    const error = await failure(converge(run));
    assert.equal(error.code, 28);
    assert.match(error.detail, /failed on purpose/);
    assert.match(error.detail, /returned to how it was/);
    assert.equal(vm.files.size, 0);
    assert.deepEqual(run.state().journal, []);
  });

  test('a package that does not register PAM: 21 naming PAM, and the package purged again', async () => {
    const vm = fakeVm({ registers: false, files: { '/etc/pam.d/common-auth': 'auth x\n' } });
    const run = await job(vm, 'debian-12');
    const error = await failure(converge(run));
    assert.equal(error.code, 21);
    assert.match(error.detail, /pam_aad/);
    assert.ok(error.steps.some((step) => step.name === 'PamRegistration'));
    assert.ok(vm.commands.includes('dpkg --purge aadsshlogin'));
    assert.equal(vm.installed.has('aadsshlogin'), false);
    assert.deepEqual([...vm.files.keys()], ['/etc/pam.d/common-auth']);
  });

  test('a repository file someone else wrote is used and never overwritten or removed', async () => {
    const foreign =
      'deb [signed-by=/usr/share/keyrings/microsoft-prod.gpg] https://packages.microsoft.com/repos/microsoft-debian-bookworm-prod bookworm main\n';
    const vm = fakeVm({ files: { [LIST]: foreign } });
    const run = await job(vm, 'debian-12');
    await converge(run);
    assert.equal(vm.files.get(LIST)?.toString(), foreign);
    assert.deepEqual(vm.fetched, [], 'no keys fetched for a file that is not ours');
    assert.ok(vm.installed.has('aadsshlogin'));
    await removeInstallation(run);
    assert.equal(vm.files.get(LIST)?.toString(), foreign);
    assert.equal(vm.installed.has('aadsshlogin'), false);
  });

  test('uninstall leaves alone a file of ours that someone changed since, and says so', async () => {
    const vm = fakeVm();
    const run = await job(vm, 'debian-12');
    await converge(run);
    const edited = `${vm.files.get(LIST)?.toString()}# pinned by configuration management\n`;
    vm.files.set(LIST, Buffer.from(edited));
    await removeInstallation(run);
    assert.equal(vm.files.get(LIST)?.toString(), edited, 'the changed file stays');
    assert.equal(vm.files.has(KEY_FILE.apt), false, 'the unchanged key file goes');
    assert.equal(vm.installed.has('aadsshlogin'), false);
    assert.ok(
      run.log.lines.some(
        (line) => line.level === 'warn' && /Left alone: .*microsoft-prod\.list/.test(line.message),
      ),
    );
  });

  test('a journal left by a killed run is undone first', async () => {
    const vm = fakeVm({ installed: { aadsshlogin: '1.0.031070001' } });
    vm.files.set(LIST, Buffer.from(`${WRITTEN_BY}\nold\n`));
    const { sha256 } = await import('../../src/linux/journal.js');
    const start: HandlerState = {
      ...emptyState(),
      journal: [
        { kind: 'file', path: LIST, written: sha256(`${WRITTEN_BY}\nold\n`), previous: null },
        { kind: 'packages', manager: 'apt', names: ['aadsshlogin'] },
      ],
    };
    const run = await job(vm, 'debian-12', {}, start);
    await converge(run);
    assert.ok(vm.commands.indexOf('dpkg --purge aadsshlogin') >= 0, 'the half install is purged');
    assert.ok(
      vm.commands.indexOf('dpkg --purge aadsshlogin') <
        vm.commands.findIndex((line) => line.startsWith('apt-get install')),
    );
    assert.ok(run.log.lines.some((line) => /stopped halfway/.test(line.message)));
    assert.ok(vm.installed.has('aadsshlogin'));
  });

  test('with the SELinux policy installed, aadsshlogin-selinux comes first and its module is checked', async () => {
    const vm = fakeVm({ installed: { 'selinux-policy-default': '2:2.2' } });
    const run = await job(vm, 'debian-12');
    // The fake semodule lists no module: the SELinux registration is missing.
    const error = await failure(converge(run));
    assert.ok(
      vm.commands.some((line) => /apt-get install .* aadsshlogin-selinux aadsshlogin$/.test(line)),
    );
    assert.equal(error.code, 21);
    assert.ok(error.steps.some((step) => step.name === 'SelinuxRegistration'));
    const purges = vm.commands.filter((line) => line.startsWith('dpkg --purge'));
    assert.deepEqual(purges, ['dpkg --purge aadsshlogin', 'dpkg --purge aadsshlogin-selinux']);
  });
});

describe('converge on rpm families', () => {
  test('AlmaLinux 9: its own folder answers 404, so rhel/9 is used; the key goes into rpm too', async () => {
    const vm = fakeVm();
    const run = await job(vm, 'almalinux-9.4');
    await converge(run);
    assert.ok(vm.fetched.includes(`${BASE}/almalinux/9/prod/repodata/repomd.xml`));
    assert.match(
      vm.files.get(REPO)?.toString() ?? '',
      /baseurl=http:\/\/mirror.example.test\/rhel\/9\/prod\//,
    );
    assert.match(vm.files.get(KEY_FILE.rpm)?.toString() ?? '', /BEGIN PGP PUBLIC KEY BLOCK/);
    assert.ok(vm.commands.includes(`rpm --import ${KEY_FILE.rpm}`));
    assert.ok(vm.commands.some((line) => line.startsWith('dnf -y install aadsshlogin')));
    const installation = readInstallation(run.state());
    assert.deepEqual(installation.rpmKeys, [
      `gpg-pubkey-${trustedFingerprint.slice(-8).toLowerCase()}`,
    ]);
    const message = await removeInstallation(run);
    assert.match(message, /aadsshlogin/);
    assert.equal(vm.files.has(REPO), false);
    assert.equal(vm.files.has(KEY_FILE.rpm), false);
    assert.ok(vm.commands.some((line) => line.startsWith('rpm -e --allmatches gpg-pubkey-')));
  });

  test('SLES 15.5: aadsshlogin=1.0.027980001 installed and locked; uninstall unlocks first', async () => {
    const vm = fakeVm();
    const run = await job(vm, 'sles-15.5');
    await converge(run);
    assert.ok(
      vm.commands.includes('zypper -q -n install --oldpackage aadsshlogin=1.0.027980001'),
      vm.commands.join('\n'),
    );
    assert.ok(vm.commands.includes('zypper -q -n addlock aadsshlogin'));
    await removeInstallation(run);
    const unlock = vm.commands.indexOf('zypper -q -n removelock aadsshlogin');
    const remove = vm.commands.indexOf('zypper -q -n remove aadsshlogin');
    assert.ok(unlock >= 0 && remove > unlock, vm.commands.join('\n'));
  });
});

describe('only trusted keys, and only a repository that passes signature checks', () => {
  // Security (project issue 7): what reaches the keyring is exactly the trusted keys; a key file
  // that is not a key, and a repository whose signatures the package manager rejects, leave
  // nothing behind and install nothing.
  const fingerprintsIn = (keyring: Buffer | undefined) =>
    publicKeys(keyring ?? Buffer.alloc(0)).map((key) => key.fingerprint);

  test('a key file holding a stranger and the trusted key: only the trusted key is installed', async () => {
    const mixed = armor(
      Buffer.concat([
        dearmor(otherArmored) ?? Buffer.alloc(0),
        dearmor(trustedArmored) ?? Buffer.alloc(0),
      ]),
    );
    const vm = fakeVm({
      answers: { [`${BASE}/keys/microsoft.asc`]: { status: 200, body: mixed } },
    });
    const run = await job(vm, 'debian-12');
    await converge(run);
    assert.deepEqual(fingerprintsIn(vm.files.get(KEY_FILE.apt)), [trustedFingerprint]);
    assert.ok(
      run.log.lines.some((line) =>
        /^Not trusted, not installed: keys [0-9A-F]{40} from/.test(line.message),
      ),
    );
  });

  // Also a regression: only the first armored block of a key file was read, so a trusted key in
  // a second block was missed (27 where gpg --import would have found it).
  test('rpm families: the key file imported into rpm holds only the trusted key', async () => {
    const mixed = `${otherArmored}${trustedArmored}`;
    const vm = fakeVm({
      answers: { [`${BASE}/keys/microsoft.asc`]: { status: 200, body: mixed } },
    });
    await converge(await job(vm, 'almalinux-9.4'));
    const armored = vm.files.get(KEY_FILE.rpm)?.toString() ?? '';
    assert.deepEqual(fingerprintsIn(dearmor(armored)), [trustedFingerprint]);
    assert.deepEqual(
      vm.commands.filter((line) => line.startsWith('rpm --import')),
      [`rpm --import ${KEY_FILE.rpm}`],
    );
  });

  test('an untrusted microsoft.asc beside a trusted microsoft-2025.asc: only the trusted one', async () => {
    const vm = fakeVm({
      answers: {
        [`${BASE}/keys/microsoft.asc`]: { status: 200, body: otherArmored },
        [`${BASE}/keys/microsoft-2025.asc`]: { status: 200, body: trustedArmored },
      },
    });
    await converge(await job(vm, 'debian-12'));
    assert.deepEqual(fingerprintsIn(vm.files.get(KEY_FILE.apt)), [trustedFingerprint]);
  });

  test('a key file that is not a key (a captive portal): 20, nothing written or installed', async () => {
    const vm = fakeVm({
      answers: {
        [`${BASE}/keys/microsoft.asc`]: { status: 200, body: '<html>Sign in to Wi-Fi</html>' },
      },
    });
    const error = await failure(converge(await job(vm, 'debian-12')));
    assert.equal(error.code, 20);
    assert.match(error.detail, /did not answer with an OpenPGP key \(not an ASCII-armored/);
    assert.equal(vm.files.size, 0);
    assert.deepEqual(installs(vm), []);
  });

  for (const [osName, refresh, file] of [
    ['debian-12', 'apt-get update', LIST],
    [
      'almalinux-9.4',
      'dnf -y --disablerepo=* --enablerepo=packages-microsoft-com-prod makecache',
      REPO,
    ],
  ] as const) {
    test(`${osName}: a repository whose signatures fail the refresh is removed again, nothing installed`, async () => {
      const vm = fakeVm({ failing: [refresh] });
      const run = await job(vm, osName);
      const error = await failure(converge(run));
      assert.equal(error.code, 20);
      assert.match(error.detail, /failed on purpose/);
      assert.match(error.detail, /returned to how it was/);
      assert.ok(vm.commands.some((line) => line.startsWith(refresh)));
      assert.deepEqual(installs(vm), []);
      assert.equal(vm.files.has(file), false, 'the repository file is gone');
      assert.equal(vm.files.size, 0, [...vm.files.keys()].join(', '));
      assert.deepEqual(run.state().journal, []);
    });
  }
});

describe('what a failed package manager said, in the status message', () => {
  test("apt's and dnf's error lines come first; other output by its last lines", () => {
    const apt = [
      'Err:1 http://mirror/repos/… aadsshlogin all 1.0.031070001',
      '  File has unexpected size (740 != 1480). Mirror sync in progress? [IP: 127.0.0.1 80]',
      'E: Failed to fetch http://mirror/…/aadsshlogin_1.0.031070001_all.deb  File has unexpected size (740 != 1480). Mirror sync in progress? [IP: 127.0.0.1 80]',
      '   Hashes of expected file:',
      '    - SHA256:df11ab92e9472ccf2de3b44459e39b9986f6f2b6fefdc73a89f6bc1a20919acf',
      '    - Filesize:1480 [weak]',
      'E: Unable to fetch some archives, maybe run apt-get update or try with --fix-missing?',
      '',
    ].join('\n');
    assert.match(
      failureLines(apt),
      /^E: Failed to fetch .*Mirror sync in progress\? .* \| E: Unable/,
    );
    assert.doesNotMatch(failureLines(apt), /SHA256/);
    const dnf =
      'Last metadata expiration check: 0:00:01 ago.\nError: Failed to download metadata for repo\n';
    assert.equal(failureLines(dnf), 'Error: Failed to download metadata for repo');
    assert.equal(failureLines('one\ntwo\nthree\nfour\nfive\n'), 'two | three | four | five');
  });
});
