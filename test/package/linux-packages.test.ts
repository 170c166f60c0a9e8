/**
 * The repository and package lifecycle of the built AADSSHLoginForLinux zip, on real package
 * managers: each test runs the handler chrooted in a throwaway VM root (vm.ts) — real apt and dpkg
 * in a Debian 12 root, real dnf, zypper and rpm in a root that carries them — against a
 * packages.microsoft.com stand-in signed with a test key (repos.ts), reached through the
 * `repository` public settings. Assumes `npm run package` ran.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { before, describe, test } from 'node:test';
import { osReleaseFixture } from '../fixtures.js';
import {
  AGENT_PATH,
  assertExit,
  type CommandRun,
  extensionVersionOf,
  type HandlerInstance,
  LINUX_HANDLER_NAME,
  type LogLine,
  PYTHON,
  requireZip,
  stopChild,
} from './agent-driver.js';
import { dearmored, NEW_VERSION, OLD_VERSION } from './repos.js';
import {
  type LinuxVm,
  type LinuxVmOptions,
  unpackHandler,
  withLinuxVm,
  withSelinuxPolicy,
} from './vm.js';
import { KEYRING, LIST, RPM_KEY, YUM_REPO, ZYPP_REPO } from './vm-files.js';

const version = extensionVersionOf();
let zip = '';

before(async () => {
  zip = await requireZip(LINUX_HANDLER_NAME);
});

/** Unpacks the zip into the VM's agent folder with settings for sequence number 0. */
function handlerIn(
  vm: LinuxVm,
  publicSettings: Record<string, unknown> = vm.publicSettings,
): Promise<HandlerInstance> {
  return unpackHandler(vm, zip, version, publicSettings);
}

/** `name → version` of the packages installed in the VM, from its own package database. */
async function installedIn(vm: LinuxVm): Promise<Map<string, string>> {
  const result =
    vm.kind === 'debian'
      ? await vm.world.exec([
          'dpkg-query',
          '-W',
          // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's format syntax
          '-f=${Package}\\t${db:Status-Status}\\t${Version}\\n',
        ])
      : await vm.world.exec(['rpm', '-qa', '--qf', '%{NAME}\\tinstalled\\t%{VERSION}\\n']);
  const installed = new Map<string, string>();
  for (const line of result.stdout.split('\n')) {
    const [name, status, installedVersion] = line.split('\t');
    if (name && installedVersion && status === 'installed') installed.set(name, installedVersion);
  }
  return installed;
}

/** The handler's log lines of one command (sequence number 0). */
async function linesOf(vm: LinuxVm, operation: string): Promise<LogLine[]> {
  return (await vm.sandbox.readLog()).filter(
    (line) => line.operation === operation && line.version === version,
  );
}

/** The commands the handler ran (its `Ran: …` log lines) during one operation. */
async function commandsOf(vm: LinuxVm, operation: string): Promise<string[]> {
  return (await linesOf(vm, operation))
    .map((line) => /^Ran: (.*?)(?: exitCode=\S+ durationMs=\S+)?$/.exec(line.message ?? '')?.[1])
    .filter((command): command is string => command !== undefined);
}

async function statusOf(handler: HandlerInstance): Promise<{
  status: string;
  code: number;
  message: string;
  substatus: { name: string; status: string; formattedMessage: { message: string } }[];
}> {
  const text = (await handler.readStatusText(0)) ?? '[]';
  const [entry] = JSON.parse(text) as [
    {
      status: {
        status: string;
        code: number;
        formattedMessage: { message: string };
        substatus?: { name: string; status: string; formattedMessage: { message: string } }[];
      };
    },
  ];
  return {
    status: entry.status.status,
    code: entry.status.code,
    message: entry.status.formattedMessage.message,
    substatus: entry.status.substatus ?? [],
  };
}

/** The VM files the package lifecycle may touch, to compare before and after a failure. */
async function snapshot(vm: LinuxVm): Promise<Record<string, string | undefined>> {
  const files = [
    LIST,
    KEYRING,
    YUM_REPO,
    ZYPP_REPO,
    RPM_KEY,
    '/etc/nsswitch.conf',
    '/etc/ssh/sshd_config',
  ];
  const entries = await Promise.all(
    files.map(async (file) => [file, await vm.root.readFile(file)] as const),
  );
  return Object.fromEntries(entries);
}

function assertFailed(run: CommandRun, code: number, message: RegExp): void {
  assertExit(run, code);
  assert.match(run.stdout, message, run.stdout);
}

/**
 * A process of the machine holding a POSIX lock (as dpkg and apt take them) on a file of the VM,
 * named `unattended-upgr` as the holder usually is; `release()` ends it.
 */
async function holdLock(
  vm: LinuxVm,
  file: string,
): Promise<{ pid: number; release(): Promise<void> }> {
  const script = [
    'import ctypes, fcntl, sys, time',
    "ctypes.CDLL(None).prctl(15, b'unattended-upgr', 0, 0, 0)",
    "f = open(sys.argv[1], 'a')",
    'fcntl.lockf(f, fcntl.LOCK_EX)',
    "print('locked', flush=True)",
    'time.sleep(3600)',
  ].join('\n');
  const child: ChildProcess = spawn(PYTHON, ['-c', script, vm.root.path(file)], {
    env: { PATH: AGENT_PATH },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise<void>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`the lock holder exited (${code})`)));
    if (!child.stdout) return reject(new Error('no stdout'));
    createInterface({ input: child.stdout }).once('line', () => resolve());
  });
  return { pid: child.pid ?? 0, release: () => stopChild(child) };
}

function withVm(options: LinuxVmOptions, body: (vm: LinuxVm) => Promise<void>): Promise<void> {
  return withLinuxVm(options, body);
}

describe('AADSSHLoginForLinux packages on Debian 12 (apt, dpkg)', () => {
  test('fresh install: our source file and key, aadsshlogin installed and registered; enable then runs only a query', async () => {
    await withVm({ kind: 'debian' }, async (vm) => {
      const handler = await handlerIn(vm);
      const install = await handler.run('install', { seq: 0 });
      assertExit(install, 0);
      const list = (await vm.root.readFile(LIST)) ?? '';
      assert.match(list, /^# Written by the AADSSHLoginForLinux VM extension/);
      assert.match(
        list,
        new RegExp(
          `^deb \\[arch=amd64 signed-by=${KEYRING}\\] ${vm.server.url}/repos/microsoft-debian-bookworm-prod bookworm main$`,
          'm',
        ),
      );
      assert.ok((await vm.root.readFile(KEYRING))?.length, 'the keyring is there');
      const installed = await installedIn(vm);
      assert.equal(installed.get('aadsshlogin'), NEW_VERSION);
      assert.equal(installed.has('aadsshlogin-selinux'), false, 'no SELinux policy, no -selinux');
      assert.match((await vm.root.readFile('/etc/nsswitch.conf')) ?? '', /passwd:.*\baad\b/);
      const status = await statusOf(handler);
      assert.equal(status.status, 'success');
      for (const name of [
        'OperatingSystem',
        'ManagedIdentity',
        'Repository',
        'Install',
        'SshdRegistration',
      ]) {
        assert.ok(
          status.substatus.some((entry) => entry.name === name),
          `substatus ${name}`,
        );
      }
      const plan = (await linesOf(vm, 'install')).filter((line) =>
        line.message?.startsWith('Plan: '),
      );
      assert.ok(plan.length > 3, 'the plan is logged before it is applied');

      const requestsBefore = (await vm.server.requests()).length;
      const dpkgLog = await vm.root.readFile('/var/log/dpkg.log');
      const enable = await handler.run('enable', { seq: 0 });
      assertExit(enable, 0);
      assert.deepEqual(
        (await commandsOf(vm, 'enable')).map((command) => command.split(' ')[0]),
        ['dpkg-query'],
        'a converged enable runs only the package query',
      );
      assert.equal((await vm.server.requests()).length, requestsBefore, 'no repository traffic');
      assert.equal(await vm.root.readFile('/var/log/dpkg.log'), dpkgLog, 'dpkg did nothing');
      assert.match((await statusOf(handler)).message, /nothing needed changing/);
    });
  });

  test('SELinux policy installed: aadsshlogin-selinux first, then aadsshlogin, and the module is verified', async () => {
    await withVm({ kind: 'debian', label: 'selinux' }, async (vm) => {
      await withSelinuxPolicy(vm);
      const handler = await handlerIn(vm);
      assertExit(await handler.run('install', { seq: 0 }), 0);
      const installed = await installedIn(vm);
      assert.equal(installed.get('aadsshlogin-selinux'), NEW_VERSION);
      assert.equal(installed.get('aadsshlogin'), NEW_VERSION);
      const install = (await commandsOf(vm, 'install')).find((command) =>
        command.startsWith('apt-get install'),
      );
      assert.match(install ?? '', /aadsshlogin-selinux aadsshlogin$/);
      assert.match(
        (await statusOf(handler)).substatus.find((entry) => entry.name === 'SelinuxRegistration')
          ?.formattedMessage.message ?? '',
        /aad_permissions/,
      );
    });
  });

  test('a key with an untrusted fingerprint: exit 27, nothing on the VM changed', async () => {
    await withVm({ kind: 'debian', label: 'untrusted' }, async (vm) => {
      const before = await snapshot(vm);
      const handler = await handlerIn(vm, { repository: { baseUrl: vm.server.url } });
      const install = await handler.run('install', { seq: 0 });
      assertFailed(install, 27, new RegExp(vm.repository.signingKey.fingerprint));
      assert.deepEqual(await snapshot(vm), before);
      assert.equal((await installedIn(vm)).has('aadsshlogin'), false);
      const status = await statusOf(handler);
      assert.equal(status.code, 27);
      assert.match(status.message, /repository\.keyFingerprints/);
    });
  });

  test('the repository answering 500: exit 20 naming the command, and the source file and key removed again', async () => {
    await withVm(
      { kind: 'debian', label: 'repo-500', faults: [{ prefix: '/repos/', status: 500 }] },
      async (vm) => {
        const before = await snapshot(vm);
        const handler = await handlerIn(vm);
        const install = await handler.run('install', { seq: 0 });
        assertFailed(install, 20, /apt-get update/);
        assert.match(install.stdout, /returned to how it was before this run/);
        assert.deepEqual(await snapshot(vm), before);
        assert.deepEqual((await vm.sandbox.readState())?.journal, []);
      },
    );
  });

  test('a package that does not register PAM: exit 21 naming PAM, and everything rolled back', async () => {
    await withVm(
      {
        kind: 'debian',
        label: 'no-pam',
        repository: {
          packages: [{ name: 'aadsshlogin', version: NEW_VERSION, registerPam: false }],
        },
      },
      async (vm) => {
        const before = await snapshot(vm);
        const handler = await handlerIn(vm);
        const install = await handler.run('install', { seq: 0 });
        assertFailed(install, 21, /pam_aad/);
        assert.match(install.stdout, /pam-auth-update --force/);
        const status = await statusOf(handler);
        assert.ok(
          status.substatus.some(
            (entry) => entry.name === 'PamRegistration' && entry.status === 'error',
          ),
        );
        assert.equal((await installedIn(vm)).has('aadsshlogin'), false, 'purged again');
        // The package's own removal scripts take back its sshd and NSS lines (the stand-in leaves
        // the empty sshd_config it created: a VM without openssh-server has none).
        const after = await snapshot(vm);
        assert.doesNotMatch(after['/etc/ssh/sshd_config'] ?? '', /aad_certhandler/);
        assert.deepEqual(
          { ...after, '/etc/ssh/sshd_config': undefined },
          { ...before, '/etc/ssh/sshd_config': undefined },
        );
        assert.deepEqual((await vm.sandbox.readState())?.journal, []);
      },
    );
  });

  test('the dpkg lock held for a while by another program: install waits, names it, then succeeds', async () => {
    await withVm({ kind: 'debian', label: 'lock-wait' }, async (vm) => {
      const holder = await holdLock(vm, '/var/lib/dpkg/lock-frontend');
      const handler = await handlerIn(vm);
      const running = handler.run('install', { seq: 0 });
      // Released once the handler has said whom it waits for.
      for (let i = 0; i < 600; i++) {
        const lines = await linesOf(vm, 'install');
        if (lines.some((line) => /Waiting for the package manager/.test(line.message ?? ''))) break;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      await holder.release();
      const install = await running;
      assertExit(install, 0);
      const waited = (await linesOf(vm, 'install')).find((line) =>
        /Waiting for the package manager/.test(line.message ?? ''),
      );
      assert.match(
        waited?.message ?? '',
        new RegExp(`unattended-upgr \\(pid ${holder.pid}\\) holds /var/lib/dpkg/lock-frontend`),
      );
      assert.equal((await installedIn(vm)).get('aadsshlogin'), NEW_VERSION);
    });
  });

  test('the dpkg lock held past the wait: enable exits 26 naming the holder, before the agent would kill it', async () => {
    await withVm({ kind: 'debian', label: 'lock-held' }, async (vm) => {
      const before = await snapshot(vm);
      const holder = await holdLock(vm, '/var/lib/dpkg/lock-frontend');
      try {
        const handler = await handlerIn(vm);
        const enable = await handler.run('enable', { seq: 0 });
        assertFailed(
          enable,
          26,
          new RegExp(`unattended-upgr \\(pid ${holder.pid}\\) holds /var/lib/dpkg/lock-frontend`),
        );
        assert.doesNotMatch(enable.stdout, /supported/);
        assert.deepEqual(await snapshot(vm), before);
      } finally {
        await holder.release();
      }
    });
  });

  test('behind a proxy: keys and packages go through it, IMDS never does', async () => {
    await withVm({ kind: 'debian', label: 'proxy', proxy: true }, async (vm) => {
      const handler = await handlerIn(vm);
      const agentEnvironment = { PATH: AGENT_PATH, ...vm.world.proxyEnvironment() };
      assertExit(await handler.run('install', { seq: 0, agentEnvironment }), 0);
      const proxied = (await vm.world.proxyRequests()).map((request) => request.url);
      const port = String(vm.server.port);
      assert.ok(
        proxied.some((url) => url.includes(port) && url.includes('/keys/microsoft.asc')) ||
          proxied.some((url) => url === `127.0.0.1:${port}`),
        `the key went through the proxy: ${proxied.join(', ')}`,
      );
      assert.ok(
        proxied.some((url) => url.includes('/repos/microsoft-debian-bookworm-prod/')),
        `apt went through the proxy: ${proxied.join(', ')}`,
      );
      assert.deepEqual(
        proxied.filter((url) => url.includes('169.254.169.254')),
        [],
        'IMDS is never reached through the proxy',
      );
    });
  });

  test('uninstall: the packages purged, our source file and key gone, a foreign source file untouched', async () => {
    await withVm({ kind: 'debian', label: 'uninstall' }, async (vm) => {
      const foreign = 'deb http://deb.example.test/debian bookworm main\n';
      await vm.root.writeFile('/etc/apt/sources.list.d/other.list', foreign);
      const handler = await handlerIn(vm);
      assertExit(await handler.run('install', { seq: 0 }), 0);
      assertExit(await handler.run('enable', { seq: 0 }), 0);
      assertExit(await handler.run('disable', { seq: 0 }), 0);
      const uninstall = await handler.run('uninstall', { seq: 0 });
      assertExit(uninstall, 0);
      assert.match(uninstall.stdout, /aadsshlogin/);
      assert.equal((await installedIn(vm)).has('aadsshlogin'), false);
      const purged = await vm.world.exec(['dpkg-query', '-W', 'aadsshlogin']);
      assert.notEqual(purged.exitCode, 0, 'purged: dpkg no longer knows the package');
      assert.equal(await vm.root.readFile(LIST), undefined);
      assert.equal(await vm.root.readFile(KEYRING), undefined);
      assert.equal(await vm.root.readFile('/etc/apt/sources.list.d/other.list'), foreign);
      assert.doesNotMatch((await vm.root.readFile('/etc/nsswitch.conf')) ?? '', /\baad\b/);
    });
  });

  test('a source file someone else wrote at our path is used, never changed, and kept on uninstall', async () => {
    await withVm({ kind: 'debian', label: 'foreign-list' }, async (vm) => {
      const key = vm.repository.signingKey;
      await vm.root.writeFile('/usr/share/keyrings/theirs.gpg', await dearmored(key));
      const theirs = `deb [signed-by=/usr/share/keyrings/theirs.gpg] ${vm.server.url}/repos/microsoft-debian-bookworm-prod bookworm main\n`;
      await vm.root.writeFile(LIST, theirs);
      const handler = await handlerIn(vm);
      assertExit(await handler.run('install', { seq: 0 }), 0);
      assert.equal(await vm.root.readFile(LIST), theirs);
      assert.equal(await vm.root.readFile(KEYRING), undefined, 'no key of ours needed');
      assertExit(await handler.run('uninstall', { seq: 0 }), 0);
      assert.equal(await vm.root.readFile(LIST), theirs);
      assert.equal((await installedIn(vm)).has('aadsshlogin'), false);
    });
  });
});

describe('AADSSHLoginForLinux packages on rpm distributions (dnf, zypper, rpm)', () => {
  test('AlmaLinux 9: its own folder answers 403, so rhel/9 is used; dnf installs, uninstall removes it all', async () => {
    await withVm(
      {
        kind: 'rpm',
        label: 'alma',
        osRelease: await osReleaseFixture('almalinux-9.4'),
        faults: [{ prefix: '/almalinux/', status: 403 }],
      },
      async (vm) => {
        const handler = await handlerIn(vm);
        const install = await handler.run('install', { seq: 0 });
        assertExit(install, 0);
        const repo = (await vm.root.readFile(YUM_REPO)) ?? '';
        assert.match(repo, new RegExp(`^baseurl=${vm.server.url}/rhel/9/prod/$`, 'm'));
        assert.match(repo, /^repo_gpgcheck=1$/m);
        assert.match((await vm.root.readFile(RPM_KEY)) ?? '', /BEGIN PGP PUBLIC KEY BLOCK/);
        assert.ok(
          (await vm.server.requests()).some(
            (request) => request.path.startsWith('/almalinux/') && request.status === 403,
          ),
        );
        assert.equal((await installedIn(vm)).get('aadsshlogin'), NEW_VERSION);
        assertExit(await handler.run('uninstall', { seq: 0 }), 0);
        assert.equal((await installedIn(vm)).has('aadsshlogin'), false);
        assert.equal(await vm.root.readFile(YUM_REPO), undefined);
        assert.equal(await vm.root.readFile(RPM_KEY), undefined);
        const keys = await vm.world.exec(['rpm', '-q', 'gpg-pubkey']);
        assert.notEqual(keys.exitCode, 0, `the imported key is removed again: ${keys.stdout}`);
      },
    );
  });

  test('SLES 15.5: aadsshlogin 1.0.027980001 installed and locked, still so after zypper update; uninstall unlocks and removes', async () => {
    await withVm(
      { kind: 'rpm', label: 'sles155', osRelease: await osReleaseFixture('sles-15.5') },
      async (vm) => {
        const handler = await handlerIn(vm);
        assertExit(await handler.run('install', { seq: 0 }), 0);
        assert.match(
          (await vm.root.readFile(ZYPP_REPO)) ?? '',
          new RegExp(`baseurl=${vm.server.url}/sles/15/prod/`),
        );
        assert.equal((await installedIn(vm)).get('aadsshlogin'), OLD_VERSION);
        const update = await vm.world.exec(['zypper', '-n', 'update']);
        assert.equal(update.exitCode, 0, update.stderr);
        assert.equal((await installedIn(vm)).get('aadsshlogin'), OLD_VERSION, 'still pinned');
        assertExit(await handler.run('enable', { seq: 0 }), 0);
        assertExit(await handler.run('uninstall', { seq: 0 }), 0);
        assert.equal((await installedIn(vm)).has('aadsshlogin'), false);
        const locks = await vm.world.exec(['zypper', '-n', 'locks']);
        assert.doesNotMatch(locks.stdout, /aadsshlogin/);
        assert.equal(await vm.root.readFile(ZYPP_REPO), undefined);
      },
    );
  });

  test('SLES 15.6 behind a proxy gets the newest aadsshlogin, not held, and zypper goes through the proxy', async () => {
    await withVm(
      {
        kind: 'rpm',
        label: 'sles156',
        osRelease: await osReleaseFixture('sles-15.6'),
        proxy: true,
      },
      async (vm) => {
        const handler = await handlerIn(vm);
        // Upper case only, as a walinuxagent.service drop-in may set it: curl (inside zypper)
        // ignores upper-case HTTP_PROXY, so the handler passes it on in lower case too.
        const proxy = vm.world.proxyEnvironment();
        const agentEnvironment = { PATH: AGENT_PATH, HTTP_PROXY: proxy.HTTP_PROXY ?? '' };
        assertExit(await handler.run('install', { seq: 0, agentEnvironment }), 0);
        assert.equal((await installedIn(vm)).get('aadsshlogin'), NEW_VERSION);
        const locks = await vm.world.exec(['zypper', '-n', 'locks']);
        assert.doesNotMatch(locks.stdout, /aadsshlogin/);
        const proxied = (await vm.world.proxyRequests()).map((request) => request.url);
        assert.ok(
          proxied.some((url) => url.includes('/sles/15/prod/')),
          `zypper went through the proxy: ${proxied.join(', ')}`,
        );
      },
    );
  });
});
