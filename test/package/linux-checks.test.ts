/**
 * The AADSSHLoginForLinux checks (operating system → 51, memory → 24, AADLoginForLinux remnants →
 * 23, system-assigned managed identity → 22, IMDS unreachable → 25), run by the built zip the way
 * the agent runs it, each scenario in its own world (world.ts): fixture /etc/os-release and
 * /proc/meminfo, a scripted mock IMDS on 169.254.169.254:80, and where it matters a recording
 * proxy. Every status file is judged by the real agent's code. Assumes `npm run package` ran.
 *
 * The scenarios run concurrently (each has its own sandbox and namespaces): the slow ones wait out
 * the handler's identity and IMDS budgets (about 2 minutes).
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { before, describe, type TestContext, test } from 'node:test';
import { osReleaseFixture } from '../fixtures.js';
import {
  AGENT_PATH,
  type AgentSandbox,
  assertExit,
  type CommandRun,
  ensureWaagent,
  extensionVersionOf,
  filesContaining,
  type HandlerInstance,
  LINUX_HANDLER_NAME,
  requireZip,
  type ValidStatus,
} from './agent-driver.js';
import { withLinuxVm } from './vm.js';
import {
  AZ_ENVIRONMENT_PATH,
  dpkgStatusWith,
  fakeAccessToken,
  IDENTITY_NOT_FOUND,
  IMDS_HANG,
  type ImdsScript,
  imdsError,
  imdsToken,
  meminfo,
  type RecordedRequest,
  slow,
  TOKEN_PATH,
  type World,
  type WorldOptions,
  withWorld,
} from './world.js';

const CHECKS = ['OperatingSystem', 'Memory', 'LegacyExtension', 'ManagedIdentity'] as const;
type CheckName = (typeof CHECKS)[number];
const IDENTITY_RESOURCE = 'ce6ff14a-7fdc-4685-bbe0-f6afdfcfa8e0';
const LEGACY_PREFIX = 'Microsoft.Azure.ActiveDirectory.LinuxSSH.AADLoginForLinux-';
/** A 1 GiB Azure VM reports a little less than 1 GiB (kernel reservations). */
const ONE_GIB_VM_KB = 944_000;
/** 468 MiB: what a 512 MiB VM reports (the handler requires 786432 kB, 768 MiB). */
const SMALL_VM_KB = 479_232;

const FEDORA_40 = `NAME="Fedora Linux"
VERSION="40 (Cloud Edition)"
ID=fedora
VERSION_ID=40
VERSION_CODENAME=""
PLATFORM_ID="platform:f40"
PRETTY_NAME="Fedora Linux 40 (Cloud Edition)"
ANSI_COLOR="0;38;2;60;110;180"
LOGO=fedora-logo-icon
CPE_NAME="cpe:/o:fedoraproject:fedora:40"
HOME_URL="https://fedoraproject.org/"
DOCUMENTATION_URL="https://docs.fedoraproject.org/en-US/fedora/f40/system-administrators-guide/"
SUPPORT_URL="https://ask.fedoraproject.org/"
BUG_REPORT_URL="https://bugzilla.redhat.com/"
REDHAT_BUGZILLA_PRODUCT="Fedora"
REDHAT_BUGZILLA_PRODUCT_VERSION=40
REDHAT_SUPPORT_PRODUCT="Fedora"
REDHAT_SUPPORT_PRODUCT_VERSION=40
SUPPORT_END=2025-05-13
VARIANT="Cloud Edition"
VARIANT_ID=cloud
`;

let zip = '';
let ubuntu2204 = '';

before(async () => {
  zip = await requireZip(LINUX_HANDLER_NAME);
  await ensureWaagent();
  ubuntu2204 = await osReleaseFixture('ubuntu-22.04');
});

/** A healthy 1 GiB Ubuntu 22.04 VM with a system-assigned identity, changed by `change`. */
function vm(marker: string, change: Partial<WorldOptions> = {}): WorldOptions {
  return {
    osRelease: ubuntu2204,
    meminfo: meminfo(ONE_GIB_VM_KB),
    imds: { [TOKEN_PATH]: [imdsToken(marker)] },
    ...change,
  };
}

/** A fresh token marker (base64url characters only, so it can be a JWT's signature). */
function newMarker(label: string): string {
  return `MOCKTOKEN_${label}_${Math.random().toString(36).slice(2, 10)}`;
}

interface Scenario {
  world: World;
  handler: HandlerInstance;
  sandbox: AgentSandbox;
}

/** Ubuntu 22.04's repository in the stand-in, for the VMs whose os-release says Ubuntu 22.04. */
const UBUNTU_REPOSITORY = { apt: [{ distro: 'ubuntu', codename: 'jammy' }] } as const;

/**
 * A test VM (vm.ts: a Debian root, chrooted, with the repository stand-in) changed by `options`,
 * with the zip unpacked and `config/0.settings` pointing at the stand-in: a VM that passes the
 * checks goes on to install for real, inside the VM.
 */
async function scenario(
  label: string,
  options: WorldOptions,
  body: (scenario: Scenario) => Promise<void>,
): Promise<void> {
  await withLinuxVm(
    { kind: 'debian', label: `checks-${label}`, ...options, repository: UBUNTU_REPOSITORY },
    async (machine) => {
      const handler = await machine.sandbox.unpack(zip, extensionVersionOf());
      await handler.writeSettings(0, { publicSettings: machine.publicSettings });
      await body({ world: machine.world, handler, sandbox: machine.sandbox });
    },
  );
}

function describeStatus(status: ValidStatus): string {
  return JSON.stringify(
    {
      status: status.status,
      code: status.code,
      message: status.message,
      substatus: status.substatus,
    },
    null,
    2,
  );
}

/** The substatus entry of a check (the status must have one). */
function check(status: ValidStatus, name: CheckName) {
  const entry = status.substatus.find((candidate) => candidate.name === name);
  assert.ok(entry, `no substatus entry ${name}:\n${describeStatus(status)}`);
  return entry;
}

/** One substatus entry per check, in the checks' order, before the entries of the later steps. */
function assertOneEntryPerCheck(status: ValidStatus): void {
  assert.deepEqual(
    status.substatus.slice(0, CHECKS.length).map((entry) => entry.name),
    [...CHECKS],
    `the substatus entries start with one per check, in order:\n${describeStatus(status)}`,
  );
}

/** A successful command's status: success, one entry per check, and every check succeeded. */
async function assertSucceeded(
  handler: HandlerInstance,
  operation: 'Install' | 'Enable',
): Promise<ValidStatus> {
  const status = await handler.agentStatus(0);
  assert.equal(status.operation, operation);
  assert.equal(status.status, 'success', describeStatus(status));
  assertOneEntryPerCheck(status);
  for (const name of CHECKS) {
    assert.equal(check(status, name).status, 'success', `${name}:\n${describeStatus(status)}`);
  }
  return status;
}

/**
 * A check's failure: the exit code, an error status the agent accepts with `status.code` equal to
 * it, the failing check's entry an error with that code, and the checks before it successful.
 * The test then asserts what else it knows and calls `assertCompleteFailure` last.
 */
async function assertFailed(
  handler: HandlerInstance,
  run: CommandRun,
  code: number,
  failing: CheckName,
): Promise<ValidStatus> {
  assertExit(run, code);
  const status = await handler.agentStatus(0);
  const text = describeStatus(status);
  assert.equal(status.status, 'error', text);
  assert.equal(status.code, run.exitCode, text);
  const index = CHECKS.indexOf(failing);
  for (const name of CHECKS.slice(0, index)) {
    assert.equal(check(status, name).status, 'success', `${name}:\n${text}`);
  }
  const entry = check(status, failing);
  assert.equal(entry.status, 'error', `${failing}:\n${text}`);
  assert.equal(entry.code, code, `${failing}:\n${text}`);
  return status;
}

/**
 * The rest of a failure's status: still one entry per check, and those after the failing one
 * (which did not run) marked as not run (`transitioning`), neither successful nor warnings.
 */
function assertCompleteFailure(status: ValidStatus, failing: CheckName): void {
  assertOneEntryPerCheck(status);
  for (const name of CHECKS.slice(CHECKS.indexOf(failing) + 1)) {
    assert.equal(
      check(status, name).status,
      'transitioning',
      `${name} did not run, yet reports otherwise:\n${describeStatus(status)}`,
    );
    assert.match(check(status, name).message ?? '', /^Not run: /);
  }
}

/** Every request to the mock IMDS was sent as IMDS requires: `Metadata: true`, no proxy header. */
function assertProperImdsRequests(requests: readonly RecordedRequest[]): void {
  for (const request of requests) {
    assert.equal(request.method, 'GET', JSON.stringify(request));
    assert.equal(request.headers.metadata, 'true', JSON.stringify(request));
    assert.equal(request.headers['x-forwarded-for'], undefined, JSON.stringify(request));
    assert.doesNotMatch(request.reply, /^rejected/, JSON.stringify(request));
  }
}

/** The token requests ask for the documented API version and the AAD SSH resource. */
function assertTokenRequests(requests: readonly RecordedRequest[]): void {
  assertProperImdsRequests(requests);
  for (const request of requests) {
    const query = new URL(request.url, 'http://169.254.169.254').searchParams;
    assert.equal(query.get('api-version'), '2018-02-01', request.url);
    assert.equal(query.get('resource'), IDENTITY_RESOURCE, request.url);
  }
}

/** The token (and its marker) is in no file of the sandbox (logs, status, state) and no output. */
async function assertTokenNowhere(
  sandbox: AgentSandbox,
  marker: string,
  runs: readonly CommandRun[],
): Promise<void> {
  assert.deepEqual(await filesContaining([sandbox.root], marker), []);
  const payload = fakeAccessToken(marker).split('.')[1] ?? '';
  assert.deepEqual(await filesContaining([sandbox.root], payload), []);
  for (const run of runs) {
    assert.ok(!`${run.stdout}${run.stderr}`.includes(marker), `${run.operation} printed the token`);
  }
}

function seconds(run: CommandRun): string {
  return `${(run.durationMs / 1000).toFixed(1)} s`;
}

describe('AADSSHLoginForLinux checks, in the built zip', { concurrency: true }, () => {
  test('a healthy VM behind a proxy: install and enable succeed, IMDS is reached directly with Metadata: true, the token is written nowhere', async (t) => {
    const marker = newMarker('healthy');
    await scenario('healthy', vm(marker, { proxy: true }), async ({ world, handler, sandbox }) => {
      const agentEnvironment = { PATH: AGENT_PATH, ...world.proxyEnvironment() };
      const install = await world.run(handler, 'install', { seq: 0, agentEnvironment });
      assertExit(install, 0);
      await assertSucceeded(handler, 'Install');
      const tokenRequests = await world.imdsRequests(TOKEN_PATH);
      assert.ok(tokenRequests.length >= 1, 'install asked IMDS for a token');
      assertTokenRequests(tokenRequests);
      const cloud = await world.imdsRequests(AZ_ENVIRONMENT_PATH);
      assert.ok(cloud.length >= 1, 'install asked IMDS for azEnvironment');
      assertProperImdsRequests(cloud);
      for (const request of cloud) {
        const query = new URL(request.url, 'http://169.254.169.254').searchParams;
        assert.equal(query.get('api-version'), '2018-10-01', request.url);
        assert.equal(query.get('format'), 'text', request.url);
      }

      const enable = await world.run(handler, 'enable', { seq: 0, agentEnvironment });
      assertExit(enable, 0);
      await assertSucceeded(handler, 'Enable');
      assert.equal(
        (await world.imdsRequests(TOKEN_PATH)).length,
        tokenRequests.length,
        'enable after a successful install does not check the identity again',
      );

      const proxied = await world.proxyRequests();
      assert.deepEqual(
        proxied.filter((request) => request.url.includes('169.254.169.254')),
        [],
        'IMDS traffic went through the proxy',
      );
      await assertTokenNowhere(sandbox, marker, [install, enable]);
      t.diagnostic(`install ${seconds(install)}, enable ${seconds(enable)}`);
    });
  });

  test('no /etc/os-release: /usr/lib/os-release is read instead', async () => {
    const marker = newMarker('usrlib');
    await scenario(
      'usrlib',
      vm(marker, { osRelease: null, usrLibOsRelease: ubuntu2204 }),
      async ({ world, handler }) => {
        assertExit(await world.run(handler, 'install', { seq: 0 }), 0);
        await assertSucceeded(handler, 'Install');
      },
    );
  });

  test('Fedora 40: install exits 51 naming the ID, version and architecture, before asking IMDS anything', async () => {
    const marker = newMarker('fedora');
    await scenario('fedora', vm(marker, { osRelease: FEDORA_40 }), async ({ world, handler }) => {
      const install = await world.run(handler, 'install', { seq: 0 });
      const status = await assertFailed(handler, install, 51, 'OperatingSystem');
      for (const message of [status.message, check(status, 'OperatingSystem').message ?? '']) {
        assert.match(message, /fedora/i);
        assert.match(message, /\b40\b/);
        assert.match(message, /x86_64|x64|amd64/);
      }
      assert.deepEqual(await world.imdsRequests(), []);
      assertCompleteFailure(status, 'OperatingSystem');
    });
  });

  test('a 512 MiB VM: install exits 24 giving the measured and the required memory', async () => {
    const marker = newMarker('memory');
    await scenario(
      'memory',
      vm(marker, { meminfo: meminfo(SMALL_VM_KB) }),
      async ({ world, handler }) => {
        const install = await world.run(handler, 'install', { seq: 0 });
        const status = await assertFailed(handler, install, 24, 'Memory');
        for (const message of [status.message, check(status, 'Memory').message ?? '']) {
          // kB or MiB, with or without thousands separators.
          assert.match(message, /479[,. ]?232|\b468\b/, 'the measured memory');
          assert.match(message, /786[,. ]?432|\b768\b/, 'the required memory');
        }
        assert.deepEqual(await world.imdsRequests(), []);
        assertCompleteFailure(status, 'Memory');
      },
    );
  });

  test('an AADLoginForLinux folder beside the handler (<Lib.Dir>): install exits 23', async () => {
    const marker = newMarker('legacydir');
    await scenario('legacydir', vm(marker), async ({ world, handler, sandbox }) => {
      await fs.mkdir(path.join(sandbox.libDir, `${LEGACY_PREFIX}1.0.1588.3`));
      const install = await world.run(handler, 'install', { seq: 0 });
      const status = await assertFailed(handler, install, 23, 'LegacyExtension');
      assert.match(status.message, /AADLoginForLinux-1\.0\.1588\.3/);
      assert.deepEqual(await world.imdsRequests(), []);
      assertCompleteFailure(status, 'LegacyExtension');
    });
  });

  test('an AADLoginForLinux folder in /var/lib/waagent: install exits 23', async () => {
    const marker = newMarker('legacyvar');
    await scenario(
      'legacyvar',
      vm(marker, { dirs: [`/var/lib/waagent/${LEGACY_PREFIX}1.0.8370001`] }),
      async ({ world, handler }) => {
        const install = await world.run(handler, 'install', { seq: 0 });
        const status = await assertFailed(handler, install, 23, 'LegacyExtension');
        assert.match(status.message, /AADLoginForLinux-1\.0\.8370001/);
        assert.deepEqual(await world.imdsRequests(), []);
        assertCompleteFailure(status, 'LegacyExtension');
      },
    );
  });

  test('the aadlogin package in the dpkg database: install exits 23', async () => {
    const marker = newMarker('legacypkg');
    await scenario(
      'legacypkg',
      vm(marker, {
        files: { '/var/lib/dpkg/status': await dpkgStatusWith('aadlogin', '1.0.016050002') },
      }),
      async ({ world, handler }) => {
        const install = await world.run(handler, 'install', { seq: 0 });
        const status = await assertFailed(handler, install, 23, 'LegacyExtension');
        assert.match(status.message, /aadlogin/);
        assert.deepEqual(await world.imdsRequests(), []);
        assertCompleteFailure(status, 'LegacyExtension');
      },
    );
  });

  test('no system-assigned identity (400 Identity not found): re-checked for a while, then install exits 22', async (t) => {
    const marker = newMarker('noidentity');
    await scenario(
      'noidentity',
      vm(marker, { imds: { [TOKEN_PATH]: [IDENTITY_NOT_FOUND] } }),
      async ({ world, handler }) => {
        const install = await world.run(handler, 'install', { seq: 0 });
        const status = await assertFailed(handler, install, 22, 'ManagedIdentity');
        const requests = await world.imdsRequests(TOKEN_PATH);
        assertTokenRequests(requests);
        t.diagnostic(`exit 22 after ${seconds(install)}, ${requests.length} token requests`);
        assert.ok(requests.length >= 2, `re-checked: ${requests.length} request(s)`);
        assertCompleteFailure(status, 'ManagedIdentity');
      },
    );
  });

  const recoveries: [string, ImdsScript[string], number][] = [
    ['429 (Retry-After: 2) then 200', [imdsError(429, { retryAfter: 2 })], 2],
    ['500, 500 then 200', [imdsError(500), imdsError(500)], 3],
    ['410 then 200', [imdsError(410)], 2],
    ['404 then 200', [imdsError(404)], 2],
    ['a token answered after 2 s', [], 1],
  ];
  for (const [label, failures, expectedRequests] of recoveries) {
    test(`IMDS answers ${label}: install succeeds`, async (t) => {
      const marker = newMarker('retry');
      const token = failures.length === 0 ? slow(2000, imdsToken(marker)) : imdsToken(marker);
      await scenario(
        'retry',
        vm(marker, { imds: { [TOKEN_PATH]: [...failures, token] } }),
        async ({ world, handler, sandbox }) => {
          const install = await world.run(handler, 'install', { seq: 0 });
          assertExit(install, 0);
          await assertSucceeded(handler, 'Install');
          const requests = await world.imdsRequests(TOKEN_PATH);
          assertTokenRequests(requests);
          assert.equal(requests.length, expectedRequests, requests.map((r) => r.reply).join(', '));
          const first = requests[0];
          const second = requests[1];
          if (label.startsWith('429') && first && second) {
            const gap = Date.parse(second.at) - Date.parse(first.at);
            assert.ok(gap >= 1900, `Retry-After: 2 honoured, yet retried after ${gap} ms`);
          }
          await assertTokenNowhere(sandbox, marker, [install]);
          t.diagnostic(`install ${seconds(install)}`);
        },
      );
    });
  }

  test('azEnvironment failing only warns: install still succeeds', async () => {
    const marker = newMarker('cloud');
    await scenario(
      'cloud',
      vm(marker, {
        imds: { [TOKEN_PATH]: [imdsToken(marker)], [AZ_ENVIRONMENT_PATH]: [imdsError(500)] },
      }),
      async ({ world, handler }) => {
        assertExit(await world.run(handler, 'install', { seq: 0 }), 0);
        const status = await handler.agentStatus(0);
        assert.notEqual(status.status, 'error', describeStatus(status));
        assert.ok((await world.imdsRequests(AZ_ENVIRONMENT_PATH)).length >= 1);
      },
    );
  });

  for (const [label, imds] of [
    ['never answers', { [TOKEN_PATH]: [IMDS_HANG], [AZ_ENVIRONMENT_PATH]: [IMDS_HANG] }],
    ['refuses connections', 'refused'],
  ] as const) {
    test(`IMDS ${label}: install exits 25 (IMDS unreachable)`, async (t: TestContext) => {
      const marker = newMarker('down');
      await scenario('down', vm(marker, { imds }), async ({ world, handler }) => {
        const install = await world.run(handler, 'install', { seq: 0 });
        const status = await assertFailed(handler, install, 25, 'ManagedIdentity');
        assert.match(status.message, /IMDS|169\.254\.169\.254|metadata/i);
        const requests = await world.imdsRequests(TOKEN_PATH);
        assertTokenRequests(requests);
        t.diagnostic(`exit 25 after ${seconds(install)}, ${requests.length} token requests`);
        assertCompleteFailure(status, 'ManagedIdentity');
      });
    });
  }

  test('enable after a successful install repeats only the cheap checks: it succeeds with IMDS down, and fails with 24 once the VM has 512 MiB', async () => {
    const marker = newMarker('enable');
    // One VM root; each phase is a world of its own around it (another IMDS, less memory).
    await withLinuxVm(
      { kind: 'debian', label: 'checks-enable', ...vm(marker), repository: UBUNTU_REPOSITORY },
      async (machine) => {
        const handler = await machine.sandbox.unpack(zip, extensionVersionOf());
        await handler.writeSettings(0, { publicSettings: machine.publicSettings });
        assertExit(await machine.world.run(handler, 'install', { seq: 0 }), 0);
        const around = (change: Partial<WorldOptions>): WorldOptions => ({
          ...vm(marker, change),
          root: machine.root.dir,
          binds: [machine.sandbox.root],
        });
        await withWorld(around({ imds: 'refused' }), async (world) => {
          assertExit(await world.run(handler, 'enable', { seq: 0 }), 0);
          await assertSucceeded(handler, 'Enable');
        });
        await withWorld(around({ meminfo: meminfo(SMALL_VM_KB) }), async (world) => {
          const enable = await world.run(handler, 'enable', { seq: 0 });
          const status = await assertFailed(handler, enable, 24, 'Memory');
          assert.equal(status.operation, 'Enable');
          assert.deepEqual(await world.imdsRequests(TOKEN_PATH), []);
          assertCompleteFailure(status, 'Memory');
        });
      },
    );
  });
});
