/**
 * IMDS misbehaving, end to end: the built zip's `install` (and `enable`, whose deadline is the
 * shortest, on the longest way through the identity check), run as the agent runs it inside a
 * throwaway Debian 12 VM (vm.ts), against a mock IMDS on 169.254.169.254:80 (world.ts) that refuses
 * connections, never answers, answers slowly or a byte at a time, throttles (429 with and without
 * Retry-After), answers 410 and 500, answers 200 with garbage, with an answer far larger than any
 * real one or one that never ends, or with bytes that are not HTTP at all; and whose
 * `compute/azEnvironment` never answers, fails or talks nonsense.
 *
 * Every scenario ends before the command's deadline with the documented code: 0 when IMDS comes
 * back, 25 (imdsUnreachable) when it does not — never 22 (that is "no identity"), never 63 (the
 * deadline) — with a status message that names IMDS and the remedy. Requests stay below IMDS's
 * 5 a second, honour Retry-After and otherwise back off; no token reaches any output.
 *
 * Every scenario runs in a VM, the failing ones too: a handler that mistook garbage for a token
 * would go on to install packages, and must do so in a throwaway root. The scenarios run
 * concurrently (each VM is independent); the failing ones wait out the handler's 90 s IMDS budget.
 * Assumes `npm run package` ran.
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { before, describe, type TestContext, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { failureKinds } from '../../src/failures.js';
import { operations } from '../../src/lifecycle/operations.js';
import {
  type CommandRun,
  extensionVersionOf,
  filesContaining,
  type HandlerInstance,
  LINUX_HANDLER_NAME,
  type LogLine,
  requireZip,
  type ValidStatus,
} from './agent-driver.js';
import { runHandlerScaleCommand } from './handler-scale.js';
import { type LinuxVm, withLinuxVm } from './vm.js';
import { LIST } from './vm-files.js';
import {
  AZ_ENVIRONMENT_PATH,
  fakeAccessToken,
  IDENTITY_NOT_FOUND,
  IMDS_HANG,
  type ImdsReply,
  type ImdsScript,
  imdsEndless,
  imdsError,
  imdsRaw,
  imdsText,
  imdsToken,
  type RecordedRequest,
  slow,
  TOKEN_PATH,
} from './world.js';

const CHECKS = ['OperatingSystem', 'Memory', 'LegacyExtension', 'ManagedIdentity'] as const;
const IMDS_REMEDY = failureKinds.imdsUnreachable.remedy;
/** Timestamps are whole milliseconds and timers may fire a millisecond early. */
const CLOCK_SLACK_MS = 25;
/**
 * The handler's peak resident memory must stay below this while IMDS pours out an endless answer:
 * the executable alone takes a few tens of MiB; an answer read without a limit reaches this within
 * a second on loopback, and gigabytes within the 10 s request timeout.
 */
const MEMORY_BOUND_KB = 300 * 1024;

let zip = '';

before(async () => {
  zip = await requireZip(LINUX_HANDLER_NAME);
});

/** A fresh token marker (base64url characters only, so it can be a JWT's signature). */
function newMarker(label: string): string {
  return `MOCKTOKEN_${label.replace(/[^A-Za-z0-9]/g, '')}_${Math.random().toString(36).slice(2, 10)}`;
}

interface Outcome {
  vm: LinuxVm;
  handler: HandlerInstance;
  run: CommandRun;
  status: ValidStatus;
  /** Every request the mock IMDS got, in order. */
  requests: RecordedRequest[];
  tokenRequests: RecordedRequest[];
  cloudRequests: RecordedRequest[];
  log: LogLine[];
  /** The handler process's peak resident memory (VmHWM), when asked to watch it. */
  peakKb: number | undefined;
}

/**
 * Runs `install` (or `enable`) once in a new VM whose IMDS follows `script(marker)`, checks what
 * every scenario must show (see {@link assertEveryScenario}), then hands the outcome to `expect`.
 */
async function runScenario(
  t: TestContext,
  label: string,
  script: (marker: string) => ImdsScript | 'refused',
  expect: (outcome: Outcome) => Promise<void> | void,
  options: { watchMemory?: boolean; operation?: 'install' | 'enable' } = {},
): Promise<void> {
  const operation = options.operation ?? 'install';
  const marker = newMarker(label);
  await withLinuxVm(
    { kind: 'debian', label: `imds-${label}`, imds: script(marker) },
    async (vm) => {
      const handler = await vm.sandbox.unpack(zip, extensionVersionOf());
      await handler.writeSettings(0, { publicSettings: vm.publicSettings });
      const memory = options.watchMemory ? watchPeakMemory(handler.dir) : undefined;
      const run = await vm.world.run(handler, operation, { seq: 0 });
      const peakKb = await memory?.stop();
      const requests = await vm.world.imdsRequests();
      const path = (request: RecordedRequest) => new URL(request.url, 'http://imds').pathname;
      const outcome: Outcome = {
        vm,
        handler,
        run,
        status: await handler.agentStatus(0),
        requests,
        tokenRequests: requests.filter((request) => path(request) === TOKEN_PATH),
        cloudRequests: requests.filter((request) => path(request) === AZ_ENVIRONMENT_PATH),
        log: await vm.sandbox.readLog(),
        peakKb,
      };
      t.diagnostic(
        `exit ${run.exitCode} after ${(run.durationMs / 1000).toFixed(1)} s; ${outcome.tokenRequests.length} token and ${outcome.cloudRequests.length} azEnvironment requests${
          outcome.tokenRequests.length > 1
            ? `, gaps ${gapsMs(outcome.tokenRequests).join(' ')} ms`
            : ''
        }${peakKb === undefined ? '' : `; peak memory ${Math.round(peakKb / 1024)} MiB`}`,
      );
      if (run.exitCode !== 0) t.diagnostic(`status message: ${outcome.status.message}`);
      await assertEveryScenario(outcome, marker, operation);
      await expect(outcome);
    },
  );
}

/**
 * What holds whatever IMDS does: the command ended by itself before its deadline (not killed at
 * the agent's timeout, not stopped by its own deadline, 63), asked IMDS properly and at most 5 times
 * in any second, and wrote no token (nor the marker of one) to any file or output.
 */
async function assertEveryScenario(
  outcome: Outcome,
  marker: string,
  operation: 'install' | 'enable',
): Promise<void> {
  const { run, status, requests, vm } = outcome;
  assert.equal(run.timedOut, false, 'killed at the agent timeout');
  assert.equal(run.signal, null);
  assert.notEqual(run.exitCode, failureKinds.deadlineExceeded.code, status.message);
  const deadlineMs = operations[operation].deadlineSeconds * 1000;
  assert.ok(
    run.durationMs < deadlineMs,
    `${operation} took ${run.durationMs} ms, past its ${deadlineMs} ms deadline`,
  );
  for (const request of requests) {
    assert.equal(request.method, 'GET', JSON.stringify(request));
    assert.equal(request.headers.metadata, 'true', JSON.stringify(request));
    assert.doesNotMatch(request.reply, /^rejected/, JSON.stringify(request));
  }
  const times = requests.map((request) => Date.parse(request.at)).sort((a, b) => a - b);
  for (let index = 5; index < times.length; index++) {
    const window = (times[index] ?? 0) - (times[index - 5] ?? 0);
    assert.ok(window >= 1000, `6 IMDS requests within ${window} ms: over IMDS's 5 a second`);
  }
  const payload = fakeAccessToken(marker).split('.')[1] ?? '';
  // The agent's folders (status, log, state, events) and where else a program writes on a VM.
  const searched = [vm.sandbox.root, ...['/etc', '/root', '/tmp', '/var'].map(vm.root.path)];
  for (const needle of [marker, payload]) {
    assert.deepEqual(await filesContaining(searched, needle), [], 'a token in a file');
    assert.ok(!`${run.stdout}${run.stderr}`.includes(needle), 'a token in the output');
  }
  assertReadable(status.message);
  for (const entry of status.substatus) assertReadable(entry.message ?? '');
}

/** A message a person can read: no stack, no serialisation accident, within the agent's limit. */
function assertReadable(message: string): void {
  assert.doesNotMatch(message, /\n\s+at |\[object Object\]|\bundefined\b|\bNaN\b/, message);
}

function describeStatus(status: ValidStatus): string {
  return JSON.stringify(
    { status: status.status, code: status.code, message: status.message, sub: status.substatus },
    null,
    2,
  );
}

function entry(status: ValidStatus, name: (typeof CHECKS)[number]) {
  const found = status.substatus.find((candidate) => candidate.name === name);
  assert.ok(found, `no substatus ${name}:\n${describeStatus(status)}`);
  return found;
}

/** Exit 0, a successful status, every check passed, and the package installed in the VM. */
async function assertInstalled({ run, status, vm }: Outcome): Promise<void> {
  assert.equal(run.exitCode, 0, `${describeStatus(status)}\n${run.stderr}`);
  assert.equal(status.status, 'success', describeStatus(status));
  for (const name of CHECKS) assert.equal(entry(status, name).status, 'success', name);
  // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's format syntax
  const query = await vm.world.exec(['dpkg-query', '-W', '-f=${db:Status-Status}', 'aadsshlogin']);
  assert.equal(query.stdout, 'installed', `aadsshlogin in the VM: ${query.stdout}${query.stderr}`);
}

/**
 * Exit 25 with an error status whose code is 25, a message naming IMDS and the remedy, the
 * ManagedIdentity check the failing one (the earlier ones passed), and nothing on the VM changed:
 * no request to the repository, no repository file. Returns the message.
 */
async function assertImdsUnreachable({ run, status, vm }: Outcome): Promise<string> {
  const text = describeStatus(status);
  assert.equal(run.exitCode, failureKinds.imdsUnreachable.code, `${text}\n${run.stderr}`);
  assert.equal(status.status, 'error', text);
  assert.equal(status.code, failureKinds.imdsUnreachable.code, text);
  assert.match(status.message, /\bIMDS\b/, text);
  assert.ok(status.message.includes(IMDS_REMEDY), `the remedy is missing:\n${text}`);
  for (const name of CHECKS.slice(0, 3)) assert.equal(entry(status, name).status, 'success', name);
  const identity = entry(status, 'ManagedIdentity');
  assert.equal(identity.status, 'error', text);
  assert.equal(identity.code, failureKinds.imdsUnreachable.code, text);
  assert.deepEqual(await vm.server.requests(), [], 'the repository was asked for something');
  assert.equal(await vm.root.readFile(LIST), undefined, `${LIST} was written`);
  return status.message;
}

/** Milliseconds between consecutive requests. */
function gapsMs(requests: readonly RecordedRequest[]): number[] {
  return requests
    .slice(1)
    .map((request, index) => Date.parse(request.at) - Date.parse(requests[index]?.at ?? ''));
}

/**
 * The shortest wait the handler's backoff allows after the n-th failed attempt (1-based): 1 s
 * doubling to 15 s, with jitter taking off at most half.
 */
function shortestBackoffMs(attempt: number): number {
  return Math.min(15_000, 1000 * 2 ** (attempt - 1)) / 2;
}

/** Each gap at least the backoff's shortest wait after that attempt, plus `perRequestMs`. */
function assertBackoff(requests: readonly RecordedRequest[], perRequestMs = 0): void {
  const gaps = gapsMs(requests);
  gaps.forEach((gap, index) => {
    const least = perRequestMs + shortestBackoffMs(index + 1) - CLOCK_SLACK_MS;
    assert.ok(gap >= least, `gap ${index + 1} was ${gap} ms, less than ${least}: ${gaps}`);
  });
}

/** The handler log's "retrying" warnings for the identity request, with their delays. */
function identityRetries(log: readonly LogLine[]): number[] {
  return log
    .filter((line) => line.message?.startsWith('IMDS identity request failed; retrying'))
    .map((line) => Number(/delayMs=(\d+)/.exec(line.message ?? '')?.[1]));
}

/**
 * The handler process's peak resident memory (VmHWM, kB), watched from outside: its executable is
 * found once by its path in the handler folder, then its status read a few times a second.
 */
function watchPeakMemory(handlerDir: string): { stop(): Promise<number> } {
  const executable = `${handlerDir}/bin/`;
  let running = true;
  let peak = 0;
  const watching = (async () => {
    let pid: string | undefined;
    while (running) {
      if (pid === undefined) {
        for (const entry of await fs.readdir('/proc')) {
          if (!/^\d+$/.test(entry)) continue;
          const argv = await fs.readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
          if (argv.startsWith(executable)) pid = entry;
        }
      }
      if (pid !== undefined) {
        const status = await fs.readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
        const kb = Number(/^VmHWM:\s+(\d+) kB/m.exec(status)?.[1] ?? 0);
        peak = Math.max(peak, kb);
      }
      await sleep(pid === undefined ? 100 : 250);
    }
  })();
  return {
    async stop() {
      running = false;
      await watching;
      return peak;
    },
  };
}

const JSON_HEADERS = { 'Content-Type': 'application/json; charset=utf-8' };
const ok = (body: string, contentType = JSON_HEADERS['Content-Type']): ImdsReply => ({
  status: 200,
  headers: { 'Content-Type': contentType },
  body,
});

describe('IMDS misbehaving, through the built zip', { concurrency: 12 }, () => {
  // -------------------------------------------------------------------------------------------
  // IMDS never gives a usable answer: 25 after the retry budget (about 90 s), nothing changed.
  // -------------------------------------------------------------------------------------------

  test('connection refused: retried with growing waits for its budget, then 25 (not 22)', async (t) => {
    await runScenario(
      t,
      'refused',
      () => 'refused',
      async (outcome) => {
        const message = await assertImdsUnreachable(outcome);
        assert.match(message, /ECONNREFUSED|refused/i);
        assert.deepEqual(outcome.requests, [], 'nothing listens, nothing is recorded');
        // Nothing listens: the handler's own log shows the attempts and the waits between them.
        const delays = identityRetries(outcome.log);
        assert.ok(delays.length >= 4, `retried for its budget: ${delays}`);
        delays.forEach((delay, index) => {
          assert.ok(delay >= shortestBackoffMs(index + 1), `wait ${index + 1}: ${delays}`);
        });
        assert.ok((delays.at(-1) ?? 0) > (delays[0] ?? 0), `the waits grow: ${delays}`);
        const attempts = Number(/failed (\d+) times/.exec(message)?.[1]);
        assert.equal(attempts, delays.length + 1, message);
      },
    );
  });

  test('no answer at all: each request times out, then 25 within the budget', async (t) => {
    await runScenario(
      t,
      'hang',
      () => ({ [TOKEN_PATH]: [IMDS_HANG], [AZ_ENVIRONMENT_PATH]: [IMDS_HANG] }),
      async (outcome) => {
        const message = await assertImdsUnreachable(outcome);
        assert.match(message, /no answer within \d+ s/);
        const { tokenRequests } = outcome;
        assert.ok(tokenRequests.length >= 2, `asked again: ${tokenRequests.length}`);
        assert.ok(tokenRequests.every((request) => request.reply === 'hang'));
        // Each request waited out its timeout (10 s) before the backoff.
        assertBackoff(tokenRequests, 10_000);
        assert.deepEqual(outcome.cloudRequests, [], 'no cloud asked for after the failure');
      },
    );
  });

  test('an answer that trickles in a byte a second: timed out like no answer, then 25', async (t) => {
    await runScenario(
      t,
      'trickle',
      () => ({ [TOKEN_PATH]: [imdsEndless(' ', 1000)] }),
      async (outcome) => {
        const message = await assertImdsUnreachable(outcome);
        assert.match(message, /no answer within \d+ s/);
        assertBackoff(outcome.tokenRequests, 10_000);
      },
    );
  });

  test('429 with Retry-After: 5, forever: every retry waits at least 5 s, then 25', async (t) => {
    await runScenario(
      t,
      '429-retry-after-forever',
      () => ({ [TOKEN_PATH]: [imdsError(429, { retryAfter: 5 })] }),
      async (outcome) => {
        const message = await assertImdsUnreachable(outcome);
        assert.match(message, /HTTP 429/);
        const gaps = gapsMs(outcome.tokenRequests);
        assert.ok(gaps.length >= 3, `retried: ${gaps}`);
        for (const gap of gaps) assert.ok(gap >= 5000 - CLOCK_SLACK_MS, `Retry-After: ${gaps}`);
        // By the end the backoff waits longer than 5 s: the budget, not Retry-After, ended it.
        assert.doesNotMatch(message, /Retry-After/);
      },
    );
  });

  test('429 without Retry-After, forever: exponential backoff, then 25', async (t) => {
    await runScenario(
      t,
      '429-forever',
      () => ({ [TOKEN_PATH]: [imdsError(429)] }),
      async (outcome) => {
        const message = await assertImdsUnreachable(outcome);
        assert.match(message, /HTTP 429/);
        assertBackoff(outcome.tokenRequests);
        const gaps = gapsMs(outcome.tokenRequests);
        assert.ok(gaps.length >= 4 && (gaps.at(-1) ?? 0) > (gaps[0] ?? 0), `growing: ${gaps}`);
      },
    );
  });

  test('429 with Retry-After: 3600: 25 at once, saying how long IMDS asked to wait', async (t) => {
    await runScenario(
      t,
      '429-retry-after-hour',
      () => ({ [TOKEN_PATH]: [imdsError(429, { retryAfter: 3600 })] }),
      async (outcome) => {
        const message = await assertImdsUnreachable(outcome);
        assert.match(message, /HTTP 429/);
        assert.match(message, /3600 s/, 'the wait IMDS asked for, longer than the check waits');
        assert.equal(outcome.tokenRequests.length, 1);
      },
    );
  });

  test('500 forever: exponential backoff, then 25', async (t) => {
    await runScenario(
      t,
      '500-forever',
      () => ({ [TOKEN_PATH]: [imdsError(500)] }),
      async (outcome) => {
        const message = await assertImdsUnreachable(outcome);
        assert.match(message, /HTTP 500/);
        assertBackoff(outcome.tokenRequests);
      },
    );
  });

  test('bytes that are not HTTP: retried like a broken connection, then 25', async (t) => {
    await runScenario(
      t,
      'not-http',
      () => ({ [TOKEN_PATH]: [imdsRaw('SSH-2.0-OpenSSH_9.2\r\n\u0000\u0001garbage\r\n\r\n')] }),
      async (outcome) => {
        const message = await assertImdsUnreachable(outcome);
        assert.match(message, /an answer that is not HTTP/);
        assert.ok(outcome.tokenRequests.length >= 2, 'retried');
        assertBackoff(outcome.tokenRequests);
      },
    );
  });

  test('a 10 MB token answer: cut off at 256 KiB, treated as broken, then 25', async (t) => {
    await runScenario(
      t,
      'ten-megabytes',
      (marker) => ({
        [TOKEN_PATH]: [
          ok(
            JSON.stringify({
              access_token: `${fakeAccessToken(marker)}${'A'.repeat(10 * 1024 * 1024)}`,
              token_type: 'Bearer',
            }),
          ),
        ],
      }),
      async (outcome) => {
        const message = await assertImdsUnreachable(outcome);
        assert.match(message, /larger than/);
        assert.ok((outcome.peakKb ?? 0) < MEMORY_BOUND_KB, `peak ${outcome.peakKb} kB`);
      },
      { watchMemory: true },
    );
  });

  test('an answer that never ends: cut off, memory stays bounded, then 25', async (t) => {
    await runScenario(
      t,
      'endless',
      () => ({ [TOKEN_PATH]: [imdsEndless('x'.repeat(64 * 1024))] }),
      async (outcome) => {
        const message = await assertImdsUnreachable(outcome);
        assert.match(message, /larger than/);
        assert.ok(outcome.peakKb !== undefined && outcome.peakKb > 0, 'the handler was watched');
        assert.ok(outcome.peakKb < MEMORY_BOUND_KB, `peak ${outcome.peakKb} kB`);
      },
      { watchMemory: true },
    );
  });

  test('enable, "Identity not found" for 110 s and then no answer: 25 before enable\'s shorter deadline', async (t) => {
    // The longest way through the identity check: the absent identity's 2-minute window, then
    // IMDS gone for the retry budget. `enable` has the shortest deadline (300 s less the margin).
    const notFoundFor110s = Array.from({ length: 11 }, () => IDENTITY_NOT_FOUND);
    await runScenario(
      t,
      'enable-longest',
      () => ({ [TOKEN_PATH]: [...notFoundFor110s, IMDS_HANG] }),
      async (outcome) => {
        assert.equal(outcome.status.operation, 'Enable');
        const message = await assertImdsUnreachable(outcome);
        assert.match(message, /no answer within \d+ s/);
        assert.match(message, /after answering "Identity not found" for \d+ s/);
        const hung = outcome.tokenRequests.filter((request) => request.reply === 'hang');
        assert.ok(hung.length >= 2, `asked again after the first hang: ${hung.length}`);
        // The failures counted are the unanswered requests, not the answers before them.
        assert.match(message, new RegExp(`failed ${hung.length} times`));
      },
      { operation: 'enable' },
    );
  });

  // -------------------------------------------------------------------------------------------
  // 200 without a usable token: 25 at once (IMDS answered; asking again does not help), readable.
  // -------------------------------------------------------------------------------------------

  const garbage: [string, string, (marker: string) => ImdsReply, RegExp][] = [
    [
      'cut-json',
      'JSON cut off in the middle of the token',
      (marker) => ok(`{"access_token":"${fakeAccessToken(marker)}`),
      /the answer \(\d+ bytes\) is not JSON/,
    ],
    [
      'html',
      'an HTML page (a proxy or captive portal answering)',
      () => ok('<html><body><h1>Access denied</h1></body></html>', 'text/html'),
      /the answer \(\d+ bytes\) is not JSON/,
    ],
    [
      'no-access-token',
      'JSON without access_token',
      () => ok('{"token_type":"Bearer","expires_in":"86399","resource":"x"}'),
      /JSON without a usable access_token/,
    ],
    [
      'empty-token',
      'an empty access_token',
      () => ok('{"access_token":"","token_type":"Bearer"}'),
      /JSON without a usable access_token/,
    ],
    ['empty-body', 'an empty body', () => ok(''), /the answer is empty/],
  ];
  for (const [label, what, reply, shape] of garbage) {
    test(`200 with ${what}: 25 after one request, saying there was no token`, async (t) => {
      await runScenario(
        t,
        label,
        (marker) => ({ [TOKEN_PATH]: [reply(marker)] }),
        async (outcome) => {
          const message = await assertImdsUnreachable(outcome);
          assert.match(message, /IMDS answered the identity request with 200 but no token/);
          assert.match(message, shape);
          assert.equal(outcome.tokenRequests.length, 1);
        },
      );
    });
  }

  // -------------------------------------------------------------------------------------------
  // IMDS misbehaves, then gives the token: install succeeds (packages installed, in the VM).
  // -------------------------------------------------------------------------------------------

  test('a token answered after 3 s: install succeeds with one request', async (t) => {
    await runScenario(
      t,
      'slow',
      (marker) => ({ [TOKEN_PATH]: [slow(3000, imdsToken(marker))] }),
      async (outcome) => {
        await assertInstalled(outcome);
        assert.equal(outcome.tokenRequests.length, 1);
      },
    );
  });

  test('429 with Retry-After: 3, then the token: install succeeds, the retry came 3 s later', async (t) => {
    await runScenario(
      t,
      '429-retry-after',
      (marker) => ({ [TOKEN_PATH]: [imdsError(429, { retryAfter: 3 }), imdsToken(marker)] }),
      async (outcome) => {
        await assertInstalled(outcome);
        const gaps = gapsMs(outcome.tokenRequests);
        assert.equal(gaps.length, 1, `${gaps}`);
        assert.ok((gaps[0] ?? 0) >= 3000 - CLOCK_SLACK_MS, `Retry-After: 3, yet ${gaps[0]} ms`);
      },
    );
  });

  test('429 three times without Retry-After, then the token: install succeeds after growing waits', async (t) => {
    await runScenario(
      t,
      '429-backoff',
      (marker) => ({
        [TOKEN_PATH]: [imdsError(429), imdsError(429), imdsError(429), imdsToken(marker)],
      }),
      async (outcome) => {
        await assertInstalled(outcome);
        assert.equal(outcome.tokenRequests.length, 4);
        assertBackoff(outcome.tokenRequests);
        const gaps = gapsMs(outcome.tokenRequests);
        assert.ok((gaps[2] ?? 0) > (gaps[0] ?? 0), `the waits grow: ${gaps}`);
      },
    );
  });

  for (const status of [410, 500]) {
    test(`${status} then the token: install succeeds with two requests`, async (t) => {
      await runScenario(
        t,
        `${status}-then-token`,
        (marker) => ({ [TOKEN_PATH]: [imdsError(status), imdsToken(marker)] }),
        async (outcome) => {
          await assertInstalled(outcome);
          assert.equal(outcome.tokenRequests.length, 2);
          assertBackoff(outcome.tokenRequests);
        },
      );
    });
  }

  // -------------------------------------------------------------------------------------------
  // azEnvironment misbehaving: the cloud is only recorded, so install succeeds assuming the
  // public cloud, after at most the cloud's own 10 s budget, and says so.
  // -------------------------------------------------------------------------------------------

  const cloudFaults: [string, string, ImdsReply][] = [
    ['cloud-hang', 'never answers', IMDS_HANG],
    ['cloud-500', 'answers 500 forever', imdsError(500)],
    ['cloud-garbage', 'answers garbage', imdsText('<html>nonsense</html>')],
    ['cloud-endless', 'answers without end', imdsEndless('AzurePublicCloud')],
  ];
  for (const [label, what, reply] of cloudFaults) {
    test(`azEnvironment ${what}: install succeeds, the cloud unknown, public assumed`, async (t) => {
      await runScenario(
        t,
        label,
        (marker) => ({ [TOKEN_PATH]: [imdsToken(marker)], [AZ_ENVIRONMENT_PATH]: [reply] }),
        async (outcome) => {
          await assertInstalled(outcome);
          assert.ok(outcome.cloudRequests.length >= 1, 'the cloud was asked for');
          assert.match(entry(outcome.status, 'ManagedIdentity').message ?? '', /assuming/);
          assert.ok(
            outcome.log.some((line) => /azEnvironment\) is unknown/.test(line.message ?? '')),
            'the log warns that the cloud is unknown',
          );
          const passed = outcome.log.find((line) =>
            line.message?.startsWith('Check ManagedIdentity passed'),
          );
          const spent = Number(/durationMs=(\d+)/.exec(passed?.message ?? '')?.[1]);
          assert.ok(spent < 60_000, `the identity check took ${spent} ms`);
        },
      );
    });
  }
});

describe('many handlers sharing one throttled IMDS', () => {
  test('20 handler processes (install --dry-run of the built zip) let go at once against IMDS limited to 5 requests/s: all pass its 429s, each fetches the keys once', async (t) => {
    // As `npm run bench` runs it with 200: in a network namespace of its own (handler-scale.ts).
    const run = await runHandlerScaleCommand(20, 300_000);
    for (const line of run.stdout.trim().split('\n')) t.diagnostic(line);
    assert.equal(run.exitCode, 0, `every handler succeeded\n${run.stdout}${run.stderr}`);
    const imds = /IMDS: (\d+) requests .*429s received: (\d+);/.exec(run.stdout);
    assert.ok(imds, 'the IMDS figures are printed');
    assert.ok(Number(imds[1]) >= 40, 'each handler asked for the identity and the cloud');
    assert.ok(Number(imds[2]) > 0, 'IMDS did throttle');
    assert.match(run.stdout, /mirror: 40 requests, per process 2 median, 2 max/);
  });
});
