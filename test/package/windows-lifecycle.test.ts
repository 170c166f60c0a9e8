/**
 * AADLoginForWindows's lifecycle, on Linux: the real pipeline and the real extension code, run
 * in this process against a fake Windows (registry, dsregcmd, reachability, IMDS), in an agent
 * sandbox whose folders and variables are the agent's; every status file is judged by the agent's
 * own code, and the log is the real CommandExecution.log. Windows itself cannot run here: what is
 * and is not verified on real Windows is stated in the README.
 */
import assert from 'node:assert/strict';
import { copyFile, mkdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { ImdsAnswer } from '../../src/io/imds.js';
import { createFileLog } from '../../src/io/log.js';
import type { RunResult } from '../../src/io/processes.js';
import type { Verb } from '../../src/lifecycle/operations.js';
import { runCommand } from '../../src/lifecycle/pipeline.js';
import { createAadLoginForWindows } from '../../src/windows/extension.js';
import {
  CDJ_KEY,
  CURRENT_VERSION_KEY,
  PKU2U_KEY,
  PRODUCT_OPTIONS_KEY,
  type RegistryValue,
  type WindowsPlatform,
} from '../../src/windows/platform.js';
import { fakeClock, fakeProcesses } from '../fakes.js';
import {
  AgentSandbox,
  ensureWaagent,
  HandlerInstance,
  REPO_ROOT,
  WINDOWS_HANDLER_NAME,
} from './agent-driver.js';

const VERSION = '1.0.0.0';
const TENANT = '72f988bf-86f1-41af-91ab-2d7cd011db47';

/** What a fake Windows VM is: its registry, its dsregcmd, its network. */
interface FakeWindowsOptions {
  build: number;
  productType?: 'WinNT' | 'ServerNT';
  installationType?: 'Client' | 'Server' | 'Server Core';
  productName?: string;
  /** IMDS identity/info: a tenant, or the answer for a VM without identity. */
  tenant?: string | null;
  azEnvironment?: string;
  reachable?: boolean;
  /** dsregcmd /status before the join. */
  joined?: { tenant: string } | null;
  /** dsregcmd /AzureSecureVMJoin's exit code as Node on Windows reports it (unsigned). */
  joinExitCode?: number;
}

function fakeWindows(options: FakeWindowsOptions) {
  const registry = new Map<string, string>([
    [`${CURRENT_VERSION_KEY}\\CurrentBuildNumber`, String(options.build)],
    [`${CURRENT_VERSION_KEY}\\InstallationType`, options.installationType ?? 'Client'],
    [`${CURRENT_VERSION_KEY}\\ProductName`, options.productName ?? 'Windows'],
    [`${PRODUCT_OPTIONS_KEY}\\ProductType`, options.productType ?? 'WinNT'],
  ]);
  const dsregcmdCalls: string[] = [];
  let joined = options.joined ?? null;
  const status = (): RunResult => ({
    exitCode: 0,
    stderr: '',
    stdout: [
      '+----------------------------------------------------------------------+',
      '| Device State                                                         |',
      '+----------------------------------------------------------------------+',
      '',
      `             AzureAdJoined : ${joined ? 'YES' : 'NO'}`,
      '          EnterpriseJoined : NO',
      '              DomainJoined : NO',
      ...(joined ? [`                  TenantId : ${joined.tenant}`] : []),
      '',
    ].join('\r\n'),
  });
  const imdsAnswer = (pathAndQuery: string): ImdsAnswer => {
    if (pathAndQuery.startsWith('/metadata/identity/info')) {
      return options.tenant === null
        ? {
            status: 400,
            body: '{"error":"invalid_request","error_description":"Identity not found"}',
            retryAfterMs: undefined,
          }
        : {
            status: 200,
            body: JSON.stringify({ tenantId: options.tenant ?? TENANT }),
            retryAfterMs: undefined,
          };
    }
    if (pathAndQuery.startsWith('/metadata/instance/compute/azEnvironment')) {
      return {
        status: 200,
        body: options.azEnvironment ?? 'AzurePublicCloud',
        retryAfterMs: undefined,
      };
    }
    return { status: 404, body: 'not found', retryAfterMs: undefined };
  };
  const reached: string[] = [];
  const platform: WindowsPlatform = {
    readRegistry: async (key, name) => registry.get(`${key}\\${name}`),
    writeRegistry: async (key, name, value: RegistryValue) => {
      registry.set(`${key}\\${name}`, String(value.data));
    },
    dsregcmd: async (args) => {
      dsregcmdCalls.push(args.join(' '));
      if (args[0] === '/status') return status();
      if (args[0] === '/AzureSecureVMJoin') {
        const exitCode = options.joinExitCode ?? 0;
        if (exitCode === 0) joined = { tenant: options.tenant ?? TENANT };
        return {
          exitCode,
          stdout: exitCode === 0 ? 'Join succeeded.\r\n' : 'DSREG error.\r\n',
          stderr: '',
        };
      }
      if (args[0] === '/leave') {
        joined = null;
        return { exitCode: 0, stdout: '', stderr: '' };
      }
      return { exitCode: 1, stdout: '', stderr: 'unknown' };
    },
    reachable: async (url) => {
      reached.push(url);
      return options.reachable === false
        ? { ok: false, problem: `${url}: getaddrinfo ENOTFOUND` }
        : { ok: true };
    },
    imds: { get: async (pathAndQuery) => imdsAnswer(pathAndQuery) },
    clock: fakeClock(),
  };
  return { platform, registry, dsregcmdCalls, reached };
}

let sandbox: AgentSandbox;
let count = 0;

before(async () => {
  await ensureWaagent();
  sandbox = await AgentSandbox.create('windows');
});
after(async () => sandbox?.cleanup());

/** A handler folder as the agent makes it, holding the Windows manifest (no executable needed here). */
async function windowsHandler(): Promise<HandlerInstance> {
  const version = `${VERSION.slice(0, -1)}${count++}`;
  const dir = sandbox.handlerDir(version, WINDOWS_HANDLER_NAME);
  await mkdir(dir, { recursive: true });
  await copyFile(
    path.join(REPO_ROOT, 'manifest', 'AADLoginForWindows', 'HandlerManifest.json'),
    path.join(dir, 'HandlerManifest.json'),
  );
  const handler = new HandlerInstance(sandbox, WINDOWS_HANDLER_NAME, version, dir);
  await handler.initialize();
  await handler.writeSettings(0, { publicSettings: {} });
  return handler;
}

/** One command through the real pipeline, with the agent's variables for it. */
async function run(handler: HandlerInstance, verb: Verb, platform: WindowsPlatform) {
  const { env } = await handler.plan(verb, {
    seq: 0,
    ...(verb === 'update' ? { updatingFromVersion: '0.9.0.0' } : {}),
  });
  return runCommand(verb, {
    extension: createAadLoginForWindows(() => platform),
    version: handler.version,
    handlerDir: handler.dir,
    env,
    clock: platform.clock,
    processes: fakeProcesses(() => ({ exitCode: 1 })),
    createLog: (options) => createFileLog(options),
  });
}

async function logLines(handler: HandlerInstance): Promise<string[]> {
  const text = await readFile(path.join(handler.logFolder, 'CommandExecution.log'), 'utf8');
  return text.split('\n').filter((line) => line.includes(`v=${handler.version} `));
}

describe('AADLoginForWindows support check', () => {
  const cases: [string, FakeWindowsOptions, boolean][] = [
    [
      'Windows Server 2019 (17763) with Desktop Experience',
      { build: 17763, productType: 'ServerNT', installationType: 'Server' },
      true,
    ],
    ['Windows 10 22H2 (19045)', { build: 19045 }, true],
    [
      'Windows Server 2022 (20348)',
      { build: 20348, productType: 'ServerNT', installationType: 'Server' },
      true,
    ],
    ['Windows 11 23H2 (22631)', { build: 22631 }, true],
    [
      'Windows Server 2025 (26100)',
      { build: 26100, productType: 'ServerNT', installationType: 'Server' },
      true,
    ],
    [
      'Windows Server 2016 (14393)',
      { build: 14393, productType: 'ServerNT', installationType: 'Server' },
      false,
    ],
    [
      'Windows Server 2022 Server Core',
      { build: 20348, productType: 'ServerNT', installationType: 'Server Core' },
      false,
    ],
  ];
  for (const [label, options, supported] of cases) {
    test(`${label}: install ${supported ? 'succeeds' : 'exits 51'}`, async () => {
      const handler = await windowsHandler();
      const { platform } = fakeWindows({ productName: label, ...options });
      const result = await run(handler, 'install', platform);
      const status = await handler.agentStatus(0);
      if (supported) {
        assert.equal(result.exitCode, 0, result.message);
        assert.equal(status.status, 'success');
      } else {
        assert.equal(result.exitCode, 51, result.message);
        assert.equal(status.status, 'error');
        assert.equal(status.code, 51);
        assert.match(status.message, /isn't supported on the VM's operating system/);
        assert.match(
          status.message,
          options.installationType === 'Server Core' ? /Server Core/ : /older than build 17763/,
        );
      }
    });
  }
});

describe('AADLoginForWindows enable, disable, uninstall', () => {
  test('a supported VM with an identity: registry, PKU2U, join confirmed, logged in the real order', async () => {
    const handler = await windowsHandler();
    const vm = fakeWindows({ build: 20348, productType: 'ServerNT', installationType: 'Server' });
    const result = await run(handler, 'enable', vm.platform);
    assert.equal(result.exitCode, 0, result.message);
    const status = await handler.agentStatus(0);
    assert.equal(status.status, 'success');
    assert.match(status.message, new RegExp(TENANT));
    assert.equal(vm.registry.get(`${PKU2U_KEY}\\AllowOnlineID`), '1');
    assert.equal(
      vm.registry.get(`${CDJ_KEY}\\AzureVmTenantIdEndpoint`),
      'http://169.254.169.254/metadata/identity/info',
    );
    assert.deepEqual(vm.dsregcmdCalls, ['/status', '/AzureSecureVMJoin', '/status']);
    assert.deepEqual(vm.reached, ['https://enterpriseregistration.windows.net/']);
    const lines = await logLines(handler);
    const order = [
      'Adding Registry Settings.',
      'Enabling PKU2U policy.',
      'Starting AAD Join process.',
      'Successfully joined machine to AAD.',
    ];
    const positions = order.map((message) => lines.findIndex((line) => line.endsWith(message)));
    assert.ok(
      positions.every((position) => position >= 0),
      `log lines:\n${lines.join('\n')}`,
    );
    assert.deepEqual(
      [...positions].sort((a, b) => a - b),
      positions,
      'in the real extension order',
    );
    assert.deepEqual(
      status.substatus.map((entry) => entry.name),
      ['OperatingSystem', 'Registry', 'Pku2uPolicy', 'Tenant', 'DeviceRegistration', 'Join'],
    );
  });

  test('already joined to the same tenant: success without joining again', async () => {
    const handler = await windowsHandler();
    const vm = fakeWindows({ build: 22631, joined: { tenant: TENANT.toUpperCase() } });
    const result = await run(handler, 'enable', vm.platform);
    assert.equal(result.exitCode, 0, result.message);
    assert.deepEqual(vm.dsregcmdCalls, ['/status']);
    assert.match((await handler.agentStatus(0)).message, /already joined/);
  });

  test('no system-assigned identity: terminal error 1007, -2145648574 in the status, exit 30, and the remedy', async () => {
    const handler = await windowsHandler();
    const vm = fakeWindows({ build: 19045, tenant: null });
    const result = await run(handler, 'enable', vm.platform);
    assert.equal(result.exitCode, 30);
    const status = await handler.agentStatus(0);
    assert.equal(status.status, 'error');
    assert.equal(status.code, -2145648574);
    assert.match(status.message, /1007/);
    assert.match(status.message, /DSREG_E_MSI_TENANTID_UNAVAILABLE \(-2145648574\)/);
    assert.match(status.message, /Enable the system-assigned managed identity/);
    assert.deepEqual(vm.dsregcmdCalls, [], 'no join attempted');
  });

  test('the device registration endpoint unreachable: -2145648607 naming the endpoint and the DNS checks', async () => {
    const handler = await windowsHandler();
    const vm = fakeWindows({
      build: 19045,
      reachable: false,
      azEnvironment: 'AzureUSGovernmentCloud',
    });
    const result = await run(handler, 'enable', vm.platform);
    assert.equal(result.exitCode, 31);
    const status = await handler.agentStatus(0);
    assert.equal(status.code, -2145648607);
    assert.match(status.message, /https:\/\/enterpriseregistration\.microsoftonline\.us\//);
    assert.match(status.message, /nslookup/);
    assert.deepEqual(vm.dsregcmdCalls, []);
  });

  for (const [label, exitCode, statusCode, code, message] of [
    ['joined otherwise', 0x801c0044, -2145648572, 32, /dsregcmd \/leave/],
    ['a duplicate hostname', 0x801c0083, -2145648509, 33, /same name already exists/],
    ['another dsregcmd error', 0x801c0003, -2145648637, 34, /0x801C0003/],
  ] as const) {
    test(`the join failing with ${label}: status code ${statusCode}, exit ${code}`, async () => {
      const handler = await windowsHandler();
      const vm = fakeWindows({ build: 19045, joinExitCode: exitCode });
      const result = await run(handler, 'enable', vm.platform);
      assert.equal(result.exitCode, code, result.message);
      const status = await handler.agentStatus(0);
      assert.equal(status.code, statusCode);
      assert.ok(status.message.includes(String(statusCode)), status.message);
      assert.match(status.message, message);
    });
  }

  test('disable changes nothing; uninstall leaves the tenant and says so in the log', async () => {
    const handler = await windowsHandler();
    const vm = fakeWindows({ build: 26100, productType: 'ServerNT', installationType: 'Server' });
    assert.equal((await run(handler, 'enable', vm.platform)).exitCode, 0);
    const calls = vm.dsregcmdCalls.length;
    const registry = new Map(vm.registry);
    assert.equal((await run(handler, 'disable', vm.platform)).exitCode, 0);
    assert.equal(vm.dsregcmdCalls.length, calls, 'disable runs no dsregcmd');
    assert.deepEqual(vm.registry, registry);
    const uninstall = await run(handler, 'uninstall', vm.platform);
    assert.equal(uninstall.exitCode, 0, uninstall.message);
    assert.deepEqual(vm.dsregcmdCalls.slice(calls), ['/status', '/leave']);
    assert.ok((await logLines(handler)).some((line) => line.endsWith('Left Microsoft Entra ID.')));
    assert.match((await handler.agentStatus(0)).message, /left Microsoft Entra ID/);
  });
});

describe('AADLoginForWindows events', () => {
  test("the agent's collector accepts them: start, each step, end with exit code", async () => {
    const handler = await windowsHandler();
    // The folder is shared by every handler version of this file: start with it empty.
    await rm(handler.eventsFolder, { recursive: true, force: true });
    await mkdir(handler.eventsFolder, { mode: 0o700 });
    const commands: { exitCode: number; steps: string[] }[] = [];
    for (const options of [
      { build: 20348, productType: 'ServerNT', installationType: 'Server' },
      { build: 19045, tenant: null },
    ] satisfies FakeWindowsOptions[]) {
      const result = await run(handler, 'enable', fakeWindows(options).platform);
      const status = await handler.agentStatus(0);
      commands.push({
        exitCode: result.exitCode,
        steps: status.substatus.map((step) => `Step ${step.name}: ${step.status} `),
      });
    }
    const { files } = await handler.agentEvents();
    assert.equal(files.length, commands.length, 'one file per command');
    for (const [index, file] of files.entries()) {
      const command = commands[index];
      assert.ok(command && file.collected, file.file);
      assert.deepEqual(file.dropped, {});
      assert.equal(file.sent.length, file.events, 'the agent sends every event');
      const messages = file.sent.map((event) => event.Context1);
      assert.match(messages[0] ?? '', /^Enable started: /);
      assert.match(messages.at(-1) ?? '', new RegExp(`exit code ${command.exitCode}, duration`));
      assert.deepEqual(
        messages.slice(1, -1).map((message, step) => message.startsWith(command.steps[step] ?? '')),
        command.steps.map(() => true),
        messages.join('\n'),
      );
    }
  });
});
