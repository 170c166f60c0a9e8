import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { HandlerFailure } from '../../src/failures.js';
import { type ImdsAnswer, ImdsUnreachable } from '../../src/io/imds.js';
import { type LinuxSystem, runChecks } from '../../src/linux/checks/index.js';
import { parseMemTotalKib } from '../../src/linux/checks/memory.js';
import { parseOsRelease } from '../../src/linux/checks/os-release.js';
import {
  compareVersions,
  describeRange,
  supportMatrix,
  supportVerdict,
} from '../../src/linux/checks/support-matrix.js';
import { azureMetadataService } from '../../src/linux/metadata-service.js';
import { fakeClock, fakeProcesses, memoryLog } from '../fakes.js';
import { osReleaseFixture } from '../fixtures.js';

const UBUNTU_2204 = await osReleaseFixture('ubuntu-22.04');

const MEMINFO_1GIB = 'MemTotal:         944284 kB\nMemFree:          512000 kB\n';

type ImdsScript = (path: string) => ImdsAnswer | 'unreachable';

function world(overrides: {
  files?: Record<string, string>;
  folders?: Record<string, string[]>;
  packages?: string[];
  imds?: ImdsScript;
  architecture?: string;
}) {
  const files = {
    '/etc/os-release': UBUNTU_2204,
    '/proc/meminfo': MEMINFO_1GIB,
    ...overrides.files,
  };
  const requests: string[] = [];
  const clock = fakeClock();
  const imds =
    overrides.imds ??
    ((path) =>
      path.includes('azEnvironment')
        ? answer(200, 'AzurePublicCloud')
        : answer(200, '{"access_token":"eyJtoken"}'));
  const processes = fakeProcesses((file) => {
    const installed = overrides.packages ?? [];
    if (file === 'dpkg-query') {
      return {
        exitCode: installed.length ? 0 : 1,
        stdout: installed.map((name) => `${name} install ok installed\n`).join(''),
      };
    }
    return { exitCode: 127 };
  });
  const system: LinuxSystem = {
    readText: async (file) => files[file as keyof typeof files],
    listDirectory: async (folder) => overrides.folders?.[folder] ?? [],
    processes,
    clock,
    architecture: overrides.architecture ?? 'x86_64',
    agentFolders: ['/var/lib/waagent'],
    metadata: azureMetadataService({
      get: async (path) => {
        requests.push(path);
        const result = imds(path);
        if (result === 'unreachable')
          throw new ImdsUnreachable('connect ECONNREFUSED 169.254.169.254:80');
        return result;
      },
    }),
  };
  return { system, requests, clock, processes };
}

function answer(status: number, body: string, retryAfterMs?: number): ImdsAnswer {
  return { status, body, retryAfterMs };
}

async function expectFailure(promise: Promise<unknown>, code: number, pattern: RegExp) {
  await assert.rejects(promise, (error) => {
    assert.ok(error instanceof HandlerFailure, String(error));
    assert.equal(error.code, code);
    assert.match(error.detail, pattern);
    return true;
  });
}

describe('os-release', () => {
  test('quoted, unquoted and single-quoted values, comments, blank lines and CRLF', () => {
    const os = parseOsRelease(
      '# comment\r\nNAME=\'SLES\'\r\n\r\nVERSION_ID="15.5"\r\nID=sles\r\nID_LIKE="suse"\r\nPRETTY_NAME="SUSE \\"Linux\\" Enterprise"\r\n',
    );
    assert.equal(os.id, 'sles');
    assert.equal(os.versionId, '15.5');
    assert.deepEqual(os.idLike, ['suse']);
    assert.equal(os.fields.NAME, 'SLES');
    assert.equal(os.prettyName, 'SUSE "Linux" Enterprise');
  });

  test('no VERSION_ID, no ID', () => {
    const os = parseOsRelease('NAME="Arch Linux"\nBUILD_ID=rolling\n');
    assert.equal(os.id, 'linux');
    assert.equal(os.versionId, undefined);
  });
});

describe('support matrix', () => {
  test('versions compare numerically', () => {
    assert.ok(compareVersions('8.10', '8.3') > 0);
    assert.ok(compareVersions('7.9', '7.10') < 0);
    assert.equal(compareVersions('8', '8.0'), 0);
  });

  const verdict = (id: string, versionId: string | undefined, architecture = 'x86_64') =>
    supportVerdict(
      { id, versionId, idLike: [], prettyName: undefined, versionCodename: undefined, fields: {} },
      architecture,
    ).supported;

  for (const [id, version, expected] of [
    ['ubuntu', '16.04', true],
    ['ubuntu', '23.10', true],
    ['ubuntu', '24.04', true],
    ['ubuntu', '24.10', false],
    ['ubuntu', '14.04', false],
    ['debian', '9', true],
    ['debian', '12', true],
    ['debian', '13', false],
    ['rhel', '7.3', false],
    ['rhel', '7.4', true],
    ['rhel', '7.9', true],
    ['rhel', '8.2', false],
    ['rhel', '8.3', true],
    ['rhel', '8.10', true],
    ['rhel', '9.0', true],
    ['rhel', '9.6', true],
    ['rhel', '10.0', false],
    ['rhel', '10.1', true],
    ['centos', '7', true],
    ['centos', '8', true],
    ['centos', '9', false],
    ['centos', '6', false],
    ['almalinux', '9.4', true],
    ['rocky', '8.9', true],
    ['ol', '7.9', false],
    ['ol', '8.10', true],
    ['sles', '12.5', true],
    ['sles', '15', false],
    ['sles', '15.1', true],
    ['sles_sap', '15.6', true],
    ['sles', '16.0', false],
    ['opensuse-leap', '15.0', false],
    ['opensuse-leap', '15.6', true],
    ['opensuse', '42.3', true],
    ['opensuse', '42.2', false],
    ['mariner', '1.0', false],
    ['mariner', '2.0', true],
    ['azurelinux', '3.0', true],
    ['fedora', '40', false],
    ['amzn', '2023', false],
  ] as const) {
    test(`${id} ${version}: ${expected ? 'supported' : 'not supported'}`, () => {
      assert.equal(verdict(id, version), expected);
    });
  }

  test('an unknown architecture or a missing VERSION_ID is not supported', () => {
    assert.equal(verdict('ubuntu', '22.04', 'ppc64le'), false);
    assert.equal(verdict('debian', undefined), false);
  });

  test('every row has a source, and ranges read as people write them', () => {
    for (const row of supportMatrix) assert.ok(row.source.length > 5, row.name);
    assert.deepEqual(supportMatrix.filter((row) => row.ids.includes('rhel')).map(describeRange), [
      '7.4–7.9',
      '8.3 and later 8.x',
      '9.0 and later 9.x',
      '10.1 and later 10.x',
    ]);
  });
});

describe('memory', () => {
  test('MemTotal is read in kB', () => {
    assert.equal(parseMemTotalKib(MEMINFO_1GIB), 944284);
    assert.equal(parseMemTotalKib('MemFree: 1 kB\n'), undefined);
  });
});

describe('the checks, in order', () => {
  test('a healthy VM passes the four checks, each a substatus step, and the cloud is read', async () => {
    const { system, requests } = world({});
    const log = memoryLog();
    const results = await runChecks(system, { log, identity: true });
    assert.deepEqual(
      results.steps.map((step) => [step.name, step.status]),
      [
        ['OperatingSystem', 'success'],
        ['Memory', 'success'],
        ['LegacyExtension', 'success'],
        ['ManagedIdentity', 'success'],
      ],
    );
    assert.equal(results.cloud?.name, 'AzurePublicCloud');
    assert.equal(requests.length, 2);
    assert.ok(log.lines.every((line) => !JSON.stringify(line).includes('eyJtoken')));
    assert.ok(
      log.lines.some(
        (line) =>
          line.message.startsWith('Check Memory passed') &&
          typeof line.fields?.durationMs === 'number',
      ),
    );
  });

  test('an unsupported system fails with 51 naming ID, VERSION_ID and architecture; IMDS is never asked', async () => {
    const { system, requests } = world({
      files: { '/etc/os-release': 'ID=fedora\nVERSION_ID=40\n' },
    });
    await expectFailure(
      runChecks(system, { log: memoryLog(), identity: true }),
      51,
      /ID=fedora, VERSION_ID=40, architecture x86_64: this distribution is not supported\.$/,
    );
    assert.deepEqual(requests, []);
  });

  test('no os-release file at all is unsupported, not a crash', async () => {
    const { system } = world({ files: { '/etc/os-release': undefined as unknown as string } });
    await expectFailure(
      runChecks(system, { log: memoryLog(), identity: true }),
      51,
      /Neither \/etc\/os-release nor \/usr\/lib\/os-release/,
    );
  });

  test('/usr/lib/os-release is read when /etc/os-release is missing', async () => {
    const { system } = world({
      files: {
        '/etc/os-release': undefined as unknown as string,
        '/usr/lib/os-release': 'ID=debian\nVERSION_ID="12"\n',
      },
    });
    const results = await runChecks(system, { log: memoryLog(), identity: false });
    assert.equal(results.os.id, 'debian');
  });

  test('a 512 MiB VM fails with 24 giving both amounts; the failure carries the steps so far', async () => {
    const { system } = world({ files: { '/proc/meminfo': 'MemTotal:         460800 kB\n' } });
    await assert.rejects(runChecks(system, { log: memoryLog(), identity: true }), (error) => {
      assert.ok(error instanceof HandlerFailure);
      assert.equal(error.code, 24);
      assert.match(error.detail, /450 MiB of memory \(MemTotal 460800 kB\).*at least 786432 kB/);
      assert.deepEqual(
        error.steps.map((step) => [step.name, step.status, step.code]),
        [
          ['OperatingSystem', 'success', 0],
          ['Memory', 'error', 24],
        ],
      );
      return true;
    });
  });

  test('the aadlogin package fails with 23', async () => {
    const { system } = world({ packages: ['aadlogin'] });
    await expectFailure(
      runChecks(system, { log: memoryLog(), identity: true }),
      23,
      /package aadlogin/,
    );
  });

  // Claim: given the command's shared package query, the check asks it (with the legacy names,
  // once the distribution is known) and starts no process of its own.
  test('with the shared package query, the aadlogin package fails with 23 and nothing else is run', async () => {
    const { system, processes } = world({});
    const asked: { os: string; names: readonly string[] }[] = [];
    await expectFailure(
      runChecks(system, {
        log: memoryLog(),
        identity: true,
        queryPackages: async (os, names) => {
          asked.push({ os: os.id, names });
          return new Map([
            ['aadlogin', '1.0.016890001'],
            ['openssh-server', '1:8.9p1-3'],
          ]);
        },
      }),
      23,
      /package aadlogin/,
    );
    assert.deepEqual(asked, [{ os: 'ubuntu', names: ['aadlogin', 'aadlogin-selinux'] }]);
    assert.deepEqual(processes.calls, []);
  });

  test("AADLoginForLinux's handler folder fails with 23 naming it", async () => {
    const { system } = world({
      folders: {
        '/var/lib/waagent': [
          'Microsoft.Azure.ActiveDirectory.LinuxSSH.AADLoginForLinux-1.0.1588.3',
          'Other-1.0',
        ],
      },
    });
    await expectFailure(
      runChecks(system, { log: memoryLog(), identity: true }),
      23,
      /AADLoginForLinux-1\.0\.1588\.3/,
    );
  });

  test('"Identity not found" for two minutes fails with 22', async () => {
    const { system, requests } = world({
      imds: () =>
        answer(400, '{"error":"invalid_request","error_description":"Identity not found"}'),
    });
    await expectFailure(
      runChecks(system, { log: memoryLog(), identity: true }),
      22,
      /Identity not found" for 1\d\d s/,
    );
    assert.ok(requests.length >= 10 && requests.length <= 14, `${requests.length} requests`);
  });

  test('an identity that appears while the handler waits is found', async () => {
    let calls = 0;
    const { system } = world({
      imds: (path) => {
        if (path.includes('azEnvironment')) return answer(200, 'AzureUSGovernmentCloud');
        calls++;
        return calls < 4
          ? answer(400, '{"error":"invalid_request","error_description":"Identity not found"}')
          : answer(200, '{"access_token":"x"}');
      },
    });
    const results = await runChecks(system, { log: memoryLog(), identity: true });
    assert.equal(results.cloud?.name, 'AzureUSGovernmentCloud');
  });

  for (const [name, first] of [
    ['429 with Retry-After', answer(429, 'Too many requests', 3000)],
    ['500', answer(500, '')],
    ['410', answer(410, '')],
    ['404', answer(404, '')],
    ['a refused connection', 'unreachable'],
  ] as const) {
    test(`${name}, then a token: present`, async () => {
      let calls = 0;
      const { system } = world({
        imds: (path) => {
          if (path.includes('azEnvironment')) return answer(200, 'azurepubliccloud');
          calls++;
          return calls <= 2 ? first : answer(200, '{"access_token":"x"}');
        },
      });
      const results = await runChecks(system, { log: memoryLog(), identity: true });
      assert.equal(results.steps.at(-1)?.status, 'success');
      assert.equal(results.cloud?.name, 'AzurePublicCloud');
    });
  }

  test('IMDS refusing connections beyond the budget fails with 25, not 22', async () => {
    const { system, clock } = world({ imds: () => 'unreachable' });
    const started = clock.now().getTime();
    await expectFailure(
      runChecks(system, { log: memoryLog(), identity: true }),
      25,
      /ECONNREFUSED/,
    );
    const spent = clock.now().getTime() - started;
    assert.ok(spent > 60_000 && spent <= 210_000, `${spent} ms`);
  });

  test('a Retry-After longer than the budget fails with 25 at once, saying how long IMDS asked to wait', async () => {
    const { system, requests } = world({
      imds: () => answer(429, '{"error":"throttled"}', 3_600_000),
    });
    await expectFailure(
      runChecks(system, { log: memoryLog(), identity: true }),
      25,
      /failed once; the last answer: HTTP 429 \(throttled\), asking to be asked again after 3600 s \(Retry-After\)/,
    );
    assert.equal(requests.filter((path) => path.includes('identity')).length, 1);
  });

  test('"Identity not found", then IMDS gone: 25, counting only the failures and naming both', async () => {
    let calls = 0;
    const { system } = world({
      imds: () =>
        ++calls <= 3
          ? answer(400, '{"error":"invalid_request","error_description":"Identity not found"}')
          : 'unreachable',
    });
    await expectFailure(
      runChecks(system, { log: memoryLog(), identity: true }),
      25,
      /failed (\d+) times over \d+ s, after answering "Identity not found" for 30 s; the last answer: connect ECONNREFUSED/,
    );
  });

  test('a 200 without a token, or an unexpected 403, fails with 25', async () => {
    const noToken = world({ imds: () => answer(200, '{"error":"none"}') });
    await expectFailure(
      runChecks(noToken.system, { log: memoryLog(), identity: true }),
      25,
      /200 but no token/,
    );
    const forbidden = world({
      imds: () => answer(403, '{"error":"forbidden","error_description":"nope"}'),
    });
    await expectFailure(
      runChecks(forbidden.system, { log: memoryLog(), identity: true }),
      25,
      /HTTP 403 \(forbidden: nope\)/,
    );
  });

  test('the converged path does not ask IMDS', async () => {
    const { system, requests } = world({});
    const results = await runChecks(system, { log: memoryLog(), identity: false });
    assert.deepEqual(requests, []);
    assert.equal(results.steps.length, 4);
  });
});
