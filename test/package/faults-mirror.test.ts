/**
 * The package repository misbehaving (issue 7, fault 5): packages.microsoft.com or a mirror that
 * rate-limits (429, with and without Retry-After), fails (5xx), cuts downloads short, holds a
 * partial copy of a file, or serves metadata that is unsigned or signed by another key. Each test
 * runs the built AADSSHLoginForLinux zip in a throwaway VM root (vm.ts) against the repository
 * stand-in (repos.ts) with scripted faults, and reads what the mirror saw (`server.requests()`),
 * what the handler logged and reported, and what is left on the VM. The last test starts 200
 * handler processes against one rate-limited mirror (mirror-simulation.ts).
 *
 * Covered elsewhere, not repeated here: a key with an untrusted fingerprint (27) and the
 * repository answering 500 to apt (20, rolled back), in linux-packages.test.ts; the HTTP client's
 * retries against a local server, in test/unit/http.test.ts. Assumes `npm run package` ran.
 */
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { osReleaseFixture } from '../fixtures.js';
import {
  assertExit,
  type CommandRun,
  extensionVersionOf,
  type HandlerInstance,
  LINUX_HANDLER_NAME,
  type LogLine,
  requireZip,
} from './agent-driver.js';
import { describeSimulation, runMirrorSimulation } from './mirror-simulation.js';
import { NEW_VERSION, type RepoRequest, testSigningKey } from './repos.js';
import { type LinuxVm, type LinuxVmOptions, unpackHandler, withLinuxVm } from './vm.js';
import { KEYRING, LIST, RPM_KEY, YUM_REPO } from './vm-files.js';

const version = extensionVersionOf();
let zip = '';

before(async () => {
  zip = await requireZip(LINUX_HANDLER_NAME);
});

const KEY_PATH = '/keys/microsoft.asc';
const APT_REPO = '/repos/microsoft-debian-bookworm-prod';
const DEB_PATH = `${APT_REPO}/pool/main/a/aadsshlogin/aadsshlogin_${NEW_VERSION}_all.deb`;

/** Unpacks the zip into the VM's agent folder with settings for sequence number 0. */
function handlerIn(vm: LinuxVm): Promise<HandlerInstance> {
  return unpackHandler(vm, zip, version);
}

/** The version of aadsshlogin installed in the VM (its own dpkg or rpm database), if any. */
async function aadsshloginIn(vm: LinuxVm): Promise<string | undefined> {
  if (vm.kind === 'rpm') {
    const rpm = await vm.world.exec(['rpm', '-q', '--qf', '%{VERSION}', 'aadsshlogin']);
    return rpm.exitCode === 0 ? rpm.stdout.trim() : undefined;
  }
  // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's format syntax
  const format = '-f=${db:Status-Status} ${Version}';
  const dpkg = await vm.world.exec(['dpkg-query', '-W', format, 'aadsshlogin']);
  const [status, installed] = dpkg.stdout.trim().split(' ');
  return dpkg.exitCode === 0 && status === 'installed' ? installed : undefined;
}

/** The files the repository step and the packages may touch, to compare before and after. */
async function snapshot(vm: LinuxVm): Promise<Record<string, string | undefined>> {
  const files = [LIST, KEYRING, YUM_REPO, RPM_KEY, '/etc/nsswitch.conf', '/etc/ssh/sshd_config'];
  return Object.fromEntries(
    await Promise.all(files.map(async (file) => [file, await vm.root.readFile(file)] as const)),
  );
}

/** What the status file of sequence number 0 says. */
interface StatusSeen {
  status: string;
  code: number;
  message: string;
}

async function statusOf(handler: HandlerInstance): Promise<StatusSeen> {
  const [entry] = JSON.parse((await handler.readStatusText(0)) ?? '[]') as [
    { status: { status: string; code: number; formattedMessage: { message: string } } },
  ];
  return {
    status: entry.status.status,
    code: entry.status.code,
    message: entry.status.formattedMessage.message,
  };
}

async function linesOf(vm: LinuxVm, operation: string): Promise<LogLine[]> {
  return (await vm.sandbox.readLog()).filter(
    (line) => line.operation === operation && line.version === version,
  );
}

/** The waits the handler chose before retrying (its `Retrying in N ms: <problem>` warnings). */
async function retriesOf(
  vm: LinuxVm,
  operation: string,
): Promise<{ delayMs: number; problem: string }[]> {
  return (await linesOf(vm, operation)).flatMap((line) => {
    const match = /^Retrying in (\d+) ms: (.*)$/.exec(line.message ?? '');
    return match ? [{ delayMs: Number(match[1]), problem: match[2] ?? '' }] : [];
  });
}

/** The package-manager commands the handler ran (its `Ran: …` log lines). */
async function commandsOf(vm: LinuxVm, operation: string): Promise<string[]> {
  return (await linesOf(vm, operation)).flatMap((line) => {
    const match = /^Ran: (.*?)(?: exitCode=\S+ durationMs=\S+)?$/.exec(line.message ?? '');
    return match?.[1] ? [match[1]] : [];
  });
}

/** The requests for one path, and the milliseconds between each and the next. */
function requestsFor(
  requests: readonly RepoRequest[],
  path: string,
): { requests: RepoRequest[]; gapsMs: number[] } {
  const mine = requests.filter((request) => request.path === path);
  const times = mine.map((request) => Date.parse(request.at));
  return { requests: mine, gapsMs: times.slice(1).map((time, i) => time - (times[i] ?? 0)) };
}

/** A failure with `code`, everything rolled back: the files as before, no package, no journal. */
async function assertRolledBack(
  vm: LinuxVm,
  run: CommandRun,
  code: number,
  before: Record<string, string | undefined>,
): Promise<void> {
  assertExit(run, code);
  assert.deepEqual(await snapshot(vm), before, 'the VM is as it was');
  assert.equal(await aadsshloginIn(vm), undefined, 'aadsshlogin is not installed');
  assert.deepEqual((await vm.sandbox.readState())?.journal ?? [], [], 'nothing left to undo');
}

/**
 * `install` in a new VM whose mirror misbehaves as `options` say: it succeeds with aadsshlogin
 * installed, then `check` looks at what the VM and the mirror saw.
 */
async function installsDespite(
  options: LinuxVmOptions,
  check: (vm: LinuxVm) => Promise<void>,
): Promise<void> {
  await withLinuxVm(options, async (vm) => {
    const handler = await handlerIn(vm);
    assertExit(await handler.run('install', { seq: 0 }), 0);
    assert.equal(await aadsshloginIn(vm), NEW_VERSION);
    await check(vm);
  });
}

/**
 * `install` in a new VM whose mirror misbehaves as `options` say: it fails with `code` and leaves
 * the VM as it was (assertRolledBack), then `check` looks at its output and status.
 */
async function refusedWith(
  options: LinuxVmOptions,
  code: number,
  check: (vm: LinuxVm, install: CommandRun, status: StatusSeen) => Promise<void>,
): Promise<void> {
  await withLinuxVm(options, async (vm) => {
    const before = await snapshot(vm);
    const handler = await handlerIn(vm);
    const install = await handler.run('install', { seq: 0 });
    await assertRolledBack(vm, install, code, before);
    await check(vm, install, await statusOf(handler));
  });
}

describe('the handler against a misbehaving mirror (Debian 12, apt)', () => {
  test('the key answered 429 with Retry-After: 2 twice: each retry waits at least 2 s, then it installs', async () => {
    await installsDespite(
      {
        kind: 'debian',
        label: 'mirror-429-ra',
        faults: [{ prefix: KEY_PATH, status: 429, retryAfter: 2, times: 2 }],
      },
      async (vm) => {
        const key = requestsFor(await vm.server.requests(), KEY_PATH);
        assert.deepEqual(
          key.requests.map((request) => [request.status, request.retryAfter]),
          [
            [429, 2],
            [429, 2],
            [200, undefined],
          ],
        );
        for (const gap of key.gapsMs) assert.ok(gap >= 2000, `retried after ${gap} ms, not 2 s`);
        const retries = await retriesOf(vm, 'install');
        assert.equal(retries.length, 2);
        for (const retry of retries) {
          assert.ok(retry.delayMs >= 2000, `waits at least Retry-After: ${retry.delayMs} ms`);
          assert.match(retry.problem, new RegExp(`${KEY_PATH} answered HTTP 429`));
        }
      },
    );
  });

  test('429 without Retry-After, then 503: retries back off with jitter, each wait longer than the last, then it installs', async () => {
    await installsDespite(
      {
        kind: 'debian',
        label: 'mirror-429-backoff',
        faults: [
          { prefix: KEY_PATH, status: 429, times: 2 },
          { prefix: KEY_PATH, status: 503, times: 1 },
        ],
      },
      async (vm) => {
        const key = requestsFor(await vm.server.requests(), KEY_PATH);
        assert.deepEqual(
          key.requests.map((request) => request.status),
          [429, 429, 503, 200],
        );
        // Attempt n waits a random time in [½, 1] × 2^(n-1) s: windows that do not overlap.
        const retries = await retriesOf(vm, 'install');
        assert.equal(retries.length, 3);
        for (const [index, retry] of retries.entries()) {
          const backoff = 1000 * 2 ** index;
          assert.ok(
            retry.delayMs >= backoff / 2 && retry.delayMs <= backoff,
            `wait ${index + 1} is ${retry.delayMs} ms, outside [${backoff / 2}, ${backoff}]`,
          );
          const gap = key.gapsMs[index] ?? 0;
          assert.ok(gap >= retry.delayMs, `the mirror saw the retry ${gap} ms later`);
        }
        assert.ok(
          key.gapsMs.every((gap, index) => index === 0 || gap > (key.gapsMs[index - 1] ?? 0)),
          `the gaps grow: ${key.gapsMs.join(', ')} ms`,
        );
        assert.match(retries[2]?.problem ?? '', /answered HTTP 503/);
      },
    );
  });

  test('the key answered 503 forever: exit 20 naming the URL inside the one-minute budget, nothing changed', async (t) => {
    await refusedWith(
      { kind: 'debian', label: 'mirror-503', faults: [{ prefix: '/keys/', status: 503 }] },
      20,
      async (vm, install, status) => {
        const url = `${vm.server.url}${KEY_PATH}`;
        assert.equal(status.code, 20);
        assert.match(status.message, new RegExp(`${url} answered HTTP 503`));
        const key = requestsFor(await vm.server.requests(), KEY_PATH);
        const spanMs = key.gapsMs.reduce((sum, gap) => sum + gap, 0);
        t.diagnostic(`${key.requests.length} requests over ${spanMs} ms, then exit 20`);
        assert.ok(key.requests.length >= 5, `retried: ${key.requests.length} requests`);
        assert.ok(spanMs < 60_000, `gave up inside the budget: ${spanMs} ms`);
        assert.ok(install.durationMs < 120_000, `failed in ${install.durationMs} ms`);
        // No package manager ran: the failure came before anything changed.
        assert.deepEqual(
          (await commandsOf(vm, 'install')).filter((command) => command.startsWith('apt-get')),
          [],
        );
      },
    );
  });

  test("apt's own downloads: the .deb answered 503 four times, InRelease 429 seven (past apt's retries): apt retries, the handler runs apt-get update again, it installs", async () => {
    await installsDespite(
      {
        kind: 'debian',
        label: 'mirror-apt-429',
        faults: [
          { prefix: `${APT_REPO}/dists/bookworm/InRelease`, status: 429, retryAfter: 1, times: 7 },
          { prefix: DEB_PATH, status: 503, times: 4 },
        ],
      },
      async (vm) => {
        const requests = await vm.server.requests();
        // apt's default (3 retries) would have given up after the 4th answer of each.
        const deb = requestsFor(requests, DEB_PATH);
        assert.deepEqual(
          deb.requests.map((request) => request.status),
          [503, 503, 503, 503, 200],
        );
        const inRelease = requestsFor(requests, `${APT_REPO}/dists/bookworm/InRelease`);
        assert.deepEqual(
          inRelease.requests.map((request) => request.status),
          [429, 429, 429, 429, 429, 429, 429, 200],
        );
        // apt's own backoff (1, 2, 4, 8, 16 s, ignoring Retry-After) over its 6 tries, then the
        // handler's wait before running apt-get update again.
        for (const seen of [deb, { gapsMs: inRelease.gapsMs.slice(0, 5) }]) {
          assert.ok(
            seen.gapsMs.every((gap, index) => index === 0 || gap > (seen.gapsMs[index - 1] ?? 0)),
            `apt backs off: ${seen.gapsMs.join(', ')} ms`,
          );
        }
        const commands = await commandsOf(vm, 'install');
        assert.equal(commands.filter((line) => line.startsWith('apt-get update')).length, 2);
        for (const verb of ['update', 'install']) {
          const command = commands.find((line) => line.startsWith(`apt-get ${verb}`)) ?? '';
          assert.match(command, /-o Acquire::Retries=5/, command);
        }
        const again = (await linesOf(vm, 'install')).filter((line) =>
          /^The repository answered 429 \(rate limited\) to "apt-get update .*"; running it again in \d+ ms$/.test(
            line.message ?? '',
          ),
        );
        assert.equal(again.length, 1);
      },
    );
  });

  test('a mirror holding a partial copy of the key: exit 20, "did not answer with an OpenPGP key", nothing changed', async () => {
    await refusedWith(
      {
        kind: 'debian',
        label: 'mirror-key-partial',
        faults: [{ prefix: KEY_PATH, partial: true }],
      },
      20,
      async (vm, _install, status) => {
        assert.match(
          status.message,
          new RegExp(`${vm.server.url}${KEY_PATH} did not answer with an OpenPGP key`),
        );
        const key = requestsFor(await vm.server.requests(), KEY_PATH);
        assert.deepEqual(
          key.requests.map((request) => [request.status, request.partial]),
          [[200, true]],
        );
      },
    );
  });

  test('the key download cut short once is fetched again, and the install succeeds', async () => {
    await installsDespite(
      {
        kind: 'debian',
        label: 'mirror-key-cut',
        faults: [{ prefix: KEY_PATH, truncate: true, times: 1 }],
      },
      async (vm) => {
        const key = requestsFor(await vm.server.requests(), KEY_PATH);
        assert.deepEqual(
          key.requests.map((request) => [request.status, request.truncated]),
          [
            [200, true],
            [200, undefined],
          ],
        );
        assert.equal((await retriesOf(vm, 'install')).length, 1);
      },
    );
  });

  test('the .deb download cut short once: apt fetches it again and the install succeeds', async () => {
    await installsDespite(
      {
        kind: 'debian',
        label: 'mirror-deb-cut',
        faults: [{ prefix: DEB_PATH, truncate: true, times: 1 }],
      },
      async (vm) => {
        const deb = requestsFor(await vm.server.requests(), DEB_PATH);
        assert.deepEqual(
          deb.requests.map((request) => [request.status, request.truncated]),
          [
            [200, true],
            [200, undefined],
          ],
        );
      },
    );
  });

  test('a mirror serving half a .deb as the whole file (sync in progress): apt refuses it, exit 28, everything rolled back', async () => {
    await refusedWith(
      {
        kind: 'debian',
        label: 'mirror-deb-partial',
        // Once only: apt does not retry a file whose size or hash is wrong.
        faults: [{ prefix: DEB_PATH, partial: true, times: 1 }],
      },
      28,
      async (vm, install, status) => {
        assert.match(install.stdout, /returned to how it was before this run/);
        assert.match(status.message, /apt-get install/);
        assert.match(status.message, /File has unexpected size|Hash Sum mismatch/);
        const deb = requestsFor(await vm.server.requests(), DEB_PATH);
        assert.deepEqual(
          deb.requests.map((request) => [request.status, request.partial]),
          [[200, true]],
        );
      },
    );
  });

  test('unsigned repository metadata (no InRelease, no Release.gpg): apt refuses it, exit 20, source file and key removed', async () => {
    await refusedWith(
      { kind: 'debian', label: 'mirror-unsigned', repository: { unsignedMetadata: true } },
      20,
      async (vm, install, status) => {
        assert.match(status.message, /apt-get update/);
        assert.match(status.message, /is not signed/);
        assert.match(install.stdout, /returned to how it was before this run/);
        const requests = await vm.server.requests();
        assert.ok(
          requests.some((request) => request.path.endsWith('/Release') && request.status === 200),
          'apt read the unsigned Release',
        );
        assert.ok(
          !requests.some((request) => request.path.startsWith(`${APT_REPO}/pool/`)),
          'no package downloaded',
        );
      },
    );
  });

  test('repository metadata signed by another key than the trusted one: apt refuses it, exit 20, everything rolled back', async () => {
    const other = await testSigningKey('other');
    const trusted = await testSigningKey();
    await withLinuxVm(
      {
        kind: 'debian',
        label: 'mirror-other-signer',
        // The trusted key is served as microsoft.asc; InRelease and Release.gpg are signed by another.
        repository: { signingKey: other, microsoftKey: trusted },
      },
      async (vm) => {
        const handler = await vm.sandbox.unpack(zip, version);
        await handler.writeSettings(0, {
          publicSettings: {
            repository: { baseUrl: vm.server.url, keyFingerprints: [trusted.fingerprint] },
          },
        });
        const before = await snapshot(vm);
        const install = await handler.run('install', { seq: 0 });
        await assertRolledBack(vm, install, 20, before);
        const status = await statusOf(handler);
        assert.match(status.message, /apt-get update/);
        assert.match(status.message, new RegExp(`NO_PUBKEY ${other.keyId}|is not signed`));
      },
    );
  });
});

describe('the handler against a misbehaving mirror (AlmaLinux 9, dnf)', () => {
  test("the repository probe answered 503 (Retry-After: 1) twice, dnf's repomd.xml 429 six times and the package once: the handler retries, runs dnf makecache again, dnf installs", async () => {
    await installsDespite(
      {
        kind: 'rpm',
        label: 'mirror-dnf',
        osRelease: await osReleaseFixture('almalinux-9.4'),
        faults: [
          // dnf's first requests after the handler's probe: the signature of repomd.xml, a package.
          // dnf tries 4 times at once: its first makecache fails, the handler runs it again.
          {
            prefix: '/rhel/9/prod/repodata/repomd.xml',
            status: 429,
            times: 6,
            userAgent: 'libdnf',
          },
          { prefix: '/rhel/9/prod/Packages/', status: 429, times: 1 },
          { prefix: '/rhel/9/prod/repodata/repomd.xml', status: 503, retryAfter: 1, times: 2 },
        ],
      },
      async (vm) => {
        const requests = await vm.server.requests();
        const probe = requestsFor(requests, '/rhel/9/prod/repodata/repomd.xml');
        assert.deepEqual(
          probe.requests.slice(0, 3).map((request) => request.status),
          [503, 503, 200],
        );
        for (const gap of probe.gapsMs.slice(0, 2)) assert.ok(gap >= 1000, `${gap} ms`);
        const throttled = requests.filter(
          (request) => request.status === 429 && request.path.startsWith('/rhel/9/prod/'),
        );
        assert.equal(throttled.length, 7, 'dnf met 429s on the metadata and on the package');
        assert.ok(probe.requests.slice(0, 3).every((r) => !r['user-agent']?.includes('libdnf')));
        const commands = await commandsOf(vm, 'install');
        assert.equal(commands.filter((line) => / makecache$/.test(line)).length, 2);
        assert.ok(
          (await linesOf(vm, 'install')).some((line) =>
            /^The repository answered 429 \(rate limited\) to "dnf .* makecache"/.test(
              line.message ?? '',
            ),
          ),
        );
      },
    );
  });
});

describe('a scale set behind one NAT address against one rate-limited mirror', () => {
  test('200 handler processes started within about a second all get their keys and repository, none retrying sooner than Retry-After', async (t) => {
    const result = await runMirrorSimulation({ processes: 200 });
    for (const line of describeSimulation(result)) t.diagnostic(line);
    const failed = result.processes.filter((p) => p.exitCode !== 0 || !p.report?.ok);
    assert.deepEqual(
      failed.map((p) => `${p.index}: exit ${p.exitCode}, ${p.report?.message ?? p.stderr}`),
      [],
      'every process succeeded',
    );
    assert.ok(result.throttled > 0, 'the mirror did throttle');
    assert.deepEqual(result.earlyRetries, [], 'no retry came sooner than its Retry-After');
    for (const p of result.processes) {
      assert.match(p.report?.message ?? '', /\/rhel\/9\/prod\/ with keys /);
      assert.ok(p.finishedMs - p.startedMs < 810_000, 'inside the install deadline');
    }
  });
});
