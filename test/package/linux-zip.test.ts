/**
 * The built AADSSHLoginForLinux zip, driven the way the Linux guest agent drives it (see
 * agent-driver.ts), with every status file judged by the real agent's code. Assumes
 * `npm run package` ran (scripts/test.sh runs it first).
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  AGENT_PATH,
  AGENT_TIMEOUT_SECONDS,
  AgentSandbox,
  agentUninstall,
  agentUpdate,
  assertExit,
  buildCopyWithVersion,
  type CommandRun,
  encryptSettings,
  ensureWaagent,
  extensionVersionOf,
  filesContaining,
  type HandlerInstance,
  judgeStatus,
  LINUX_HANDLER_NAME,
  type LogLine,
  makeTestCertificate,
  nextRevision,
  npmVersionOf,
  requireZip,
  runTool,
  SUPPORTED_FEATURES,
  settingsFileText,
  WIRE_PROTOCOL_ADDRESS,
  watchStatus,
} from './agent-driver.js';
import { type LinuxVm, linuxVm } from './vm.js';
import { azureVm } from './world.js';

const versionA = extensionVersionOf();
let zipA = '';

/**
 * Commands that fail before anything on the VM changes run on an ordinary Azure VM: this machine's
 * files and an IMDS with an identity. Commands that install run in a test VM of their own (vm.ts:
 * a Debian 12 root with the repository stand-in, reached through the public settings).
 */
let vm: Awaited<ReturnType<typeof azureVm>>;

before(async () => {
  zipA = await requireZip(LINUX_HANDLER_NAME);
  await ensureWaagent();
  vm = await azureVm();
});

after(async () => vm?.close());

/** dpkg's status of aadsshlogin in a test VM (empty when dpkg does not know it). */
async function aadsshloginStatus(machine: LinuxVm): Promise<string> {
  // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's format syntax
  const result = await machine.world.exec(['dpkg-query', '-W', '-f=${Status}', 'aadsshlogin']);
  return result.exitCode === 0 ? result.stdout : '';
}

/** Log lines of one command of one version (the handler names both on every line). */
function linesOf(
  lines: readonly LogLine[],
  operation: string,
  seq: number,
  version: string,
): LogLine[] {
  return lines.filter(
    (line) =>
      line.operation === operation &&
      line.sequenceNumber === String(seq) &&
      line.version === version,
  );
}

function assertLogged(
  lines: readonly LogLine[],
  operation: string,
  seq: number,
  version: string,
  messages: readonly RegExp[],
): void {
  const mine = linesOf(lines, operation, seq, version);
  for (const message of messages) {
    assert.ok(
      mine.some((line) => message.test(line.message ?? '')),
      `no ${operation} seq=${seq} v=${version} log line matches ${message}; lines:\n${lines.map((line) => line.raw).join('\n')}`,
    );
  }
}

async function unpackA(sandbox: AgentSandbox): Promise<HandlerInstance> {
  return sandbox.unpack(zipA, versionA);
}

describe('the driver and the status judge are the real agent', () => {
  let sandbox: AgentSandbox;
  let handler: HandlerInstance;
  before(async () => {
    sandbox = await AgentSandbox.create('reference', { launcher: vm.launcher });
    handler = await unpackA(sandbox);
  });
  after(async () => sandbox.cleanup());

  test('HandlerEnvironment.json, settings files and every command line and variable match what WALinuxAgent 2.7.3.0 writes and runs', async () => {
    const settings = {
      publicSettings: { repository: { baseUrl: 'https://mirror.example.com/ü' }, n: 1 },
      protectedSettings: 'MIIBsomeBase64==',
      protectedSettingsCertThumbprint: '0123456789ABCDEF0123456789ABCDEF01234567',
    };
    const reference = await handler.agentReference({
      seq: 7,
      settings,
      updatingFromVersion: '0.9.0.0',
    });
    assert.equal(reference.agentVersion, '2.7.3.0');
    assert.equal(reference.baseDir, handler.dir);
    assert.equal(
      await fs.readFile(path.join(handler.dir, 'HandlerEnvironment.json'), 'utf8'),
      reference.handlerEnvironment,
    );
    assert.equal(settingsFileText(settings), reference.settings);
    assert.equal(reference.noSettings, '');

    const expectations: {
      name: string;
      operation: Parameters<HandlerInstance['plan']>[0];
      options: Parameters<HandlerInstance['plan']>[1];
    }[] = [
      { name: 'install', operation: 'install', options: { seq: 7 } },
      { name: 'enable', operation: 'enable', options: { seq: 7 } },
      { name: 'disable', operation: 'disable', options: { seq: 7 } },
      { name: 'uninstall', operation: 'uninstall', options: { seq: 7 } },
      {
        name: 'update',
        operation: 'update',
        options: { seq: 7, updatingFromVersion: '0.9.0.0', disableExitCode: 0 },
      },
      {
        name: 'update-after-failed-update',
        operation: 'update',
        options: { seq: 7, updatingFromVersion: '0.9.0.0', disableExitCode: null },
      },
      {
        name: 'install-after-update',
        operation: 'install',
        options: { seq: 7, uninstallExitCode: 0 },
      },
      {
        name: 'enable-after-update',
        operation: 'enable',
        options: { seq: 7, uninstallExitCode: 0 },
      },
    ];
    assert.deepEqual(
      reference.commands.map((command) => command.name),
      expectations.map((expectation) => expectation.name),
    );
    for (const [index, expectation] of expectations.entries()) {
      const agent = reference.commands[index];
      assert.ok(agent);
      const plan = await handler.plan(expectation.operation, expectation.options);
      assert.equal(plan.command, agent.command, expectation.name);
      assert.equal(agent.cwd, handler.dir);
      assert.equal(agent.shell, true);
      assert.equal(agent.timeout, AGENT_TIMEOUT_SECONDS[expectation.operation], expectation.name);
      const { PATH, ...agentVariables } = plan.env;
      assert.equal(PATH, AGENT_PATH);
      assert.deepEqual(agentVariables, agent.env, expectation.name);
    }
    assert.equal(
      reference.commands[0]?.env.AZURE_GUEST_AGENT_EXTENSION_SUPPORTED_FEATURES,
      SUPPORTED_FEATURES,
    );
    assert.equal(
      reference.commands[0]?.env.AZURE_GUEST_AGENT_WIRE_PROTOCOL_ADDRESS,
      WIRE_PROTOCOL_ADDRESS,
    );
  });

  test('the status judge rejects what the agent rejects', async () => {
    const cases: [string, string][] = [
      ['not JSON (a torn write)', '[{"status": {"status": "succ'],
      ['not an array', '{"status": {"status": "success"}}'],
      ['no status.status', '[{"status": {"code": 0}}]'],
      [
        'formattedMessage without lang',
        '[{"status": {"status": "success", "formattedMessage": {"message": "x"}}}]',
      ],
      [
        'bad substatus status',
        '[{"status": {"status": "success", "substatus": [{"status": "fine"}]}}]',
      ],
    ];
    for (const [what, text] of cases) {
      await fs.writeFile(handler.statusFile(90), text);
      const verdict = await judgeStatus(handler, 90);
      assert.equal(verdict.accepted, false, what);
      assert.equal(verdict.reported?.status, 'error', what);
      assert.equal(verdict.reported?.code, 1012, what);
      if (what.startsWith('not JSON')) {
        await assert.rejects(handler.agentStatus(90), /the agent rejects/, what);
      }
    }
    await fs.writeFile(
      handler.statusFile(90),
      '[{"status": {"status": "success", "substatus": null}}]',
    );
    assert.equal((await judgeStatus(handler, 90)).accepted, true);
    await fs.rm(handler.statusFile(90));
    const missing = await judgeStatus(handler, 90);
    assert.equal(missing.reported?.status, 'transitioning');
    assert.match(missing.reported?.message ?? '', /no status file was reported/);
  });
});

describe('first install, enable, re-enable and new settings', () => {
  let sandbox: AgentSandbox;
  let machine!: LinuxVm;
  let handler: HandlerInstance;
  before(async () => {
    machine = await linuxVm({ kind: 'debian', label: 'lifecycle' });
    sandbox = machine.sandbox;
    handler = await unpackA(sandbox);
  });
  after(async () => machine?.close());

  test('install then enable for sequence number 0 both succeed and say so in status, state and log', async () => {
    await handler.writeSettings(0, { publicSettings: machine.publicSettings });
    const install = await handler.run('install', { seq: 0 });
    assertExit(install, 0);
    const installStatus = await handler.agentStatus(0);
    assert.equal(installStatus.status, 'success');
    assert.equal(installStatus.operation, 'Install');
    assert.equal(installStatus.code, 0);
    assert.match(install.stdout, /^Install succeeded: .*\n$/);

    const enable = await handler.run('enable', { seq: 0 });
    assertExit(enable, 0);
    const status = await handler.agentStatus(0);
    assert.equal(status.status, 'success');
    assert.equal(status.operation, 'Enable');
    assert.match(status.message, /^Enable succeeded: /);
    assert.equal(enable.stdout.trim(), status.message);

    const state = await sandbox.readState();
    assert.equal(state?.owner, versionA);
    assert.deepEqual(
      state?.applied.map((entry) => [
        entry.operation,
        entry.sequenceNumber,
        entry.version,
        entry.status,
      ]),
      [
        ['install', 0, versionA, 'success'],
        ['enable', 0, versionA, 'success'],
      ],
    );

    const lines = await sandbox.readLog();
    for (const line of lines) {
      assert.equal(line.fromScript, undefined, `a line from the entry script: ${line.raw}`);
      assert.ok(
        line.operation && line.sequenceNumber === '0' && line.version === versionA,
        `every line names operation, seq and version: ${line.raw}`,
      );
    }
    assertLogged(lines, 'install', 0, versionA, [/^Install started /, /^Install succeeded: /]);
    assertLogged(lines, 'enable', 0, versionA, [/^Enable started /, /^Enable succeeded: /]);
    assert.equal(new Set(lines.map((line) => line.pid)).size, 2, 'one process per command');

    // The handler writes nothing into the agent's config/, and leaves no temporary files.
    assert.deepEqual((await fs.readdir(handler.configFolder)).sort(), [
      '0.settings',
      'HandlerState',
    ]);
    assert.deepEqual(await fs.readdir(handler.statusFolder), ['0.status']);
  });

  test('enable again with the same sequence number succeeds and the status never goes back to transitioning', async () => {
    const watcher = watchStatus(handler, 0);
    const enable = await handler.run('enable', { seq: 0 });
    const seen = await watcher.stop();
    assertExit(enable, 0);
    assert.deepEqual(
      seen,
      ['success'],
      `status values seen during the re-enable: ${seen.join(', ')}`,
    );
    const status = await handler.agentStatus(0);
    assert.equal(status.status, 'success');
    assert.equal(status.operation, 'Enable');
    const state = await sandbox.readState();
    assert.equal(state?.applied.filter((entry) => entry.operation === 'enable').length, 2);
  });

  test('new public settings (sequence number 1) with a repository mirror are accepted; unknown keys only warn', async () => {
    await handler.writeSettings(1, {
      publicSettings: {
        repository: { ...machine.publicSettings.repository, baseUrl: `${machine.server.url}/` },
        someFutureSetting: true,
      },
    });
    const enable = await handler.run('enable', { seq: 1 });
    assertExit(enable, 0);
    const status = await handler.agentStatus(1);
    assert.equal(status.status, 'success');
    assert.ok(status.message.includes(machine.server.url), status.message);
    const lines = await sandbox.readLog();
    assertLogged(lines, 'enable', 1, versionA, [
      /^Enable started /,
      /someFutureSetting/,
      /^Enable succeeded: /,
    ]);
    assert.ok(
      linesOf(lines, 'enable', 1, versionA).some(
        (line) => line.level === 'WARN' && /someFutureSetting/.test(line.raw),
      ),
      'the unknown key is a warning',
    );
    assert.equal(
      (await handler.agentStatus(0)).status,
      'success',
      'the status of seq 0 is untouched',
    );
  });

  test('an invalid repository.baseUrl (ftp://x) fails enable with 53 and an error status naming the setting', async () => {
    await handler.writeSettings(2, { publicSettings: { repository: { baseUrl: 'ftp://x' } } });
    const enable = await handler.run('enable', { seq: 2 });
    assertExit(enable, 53);
    const status = await handler.agentStatus(2);
    assert.equal(status.status, 'error');
    assert.equal(status.code, 53);
    assert.match(status.message, /repository\.baseUrl/);
    assert.match(enable.stdout, /repository\.baseUrl/);
    assert.equal(
      (await handler.agentStatus(1)).status,
      'success',
      'the status of seq 1 is untouched',
    );
    const state = await sandbox.readState();
    assert.equal(state?.owner, versionA);
  });
});

describe('update between two built versions, in the agent order', () => {
  let copyRoot = '';
  let zipB = '';
  let versionB = '';
  let sandbox: AgentSandbox;
  let machine!: LinuxVm;
  before(async () => {
    copyRoot = await buildCopyWithVersion(nextRevision(npmVersionOf()));
    versionB = extensionVersionOf(copyRoot);
    zipB = await requireZip(LINUX_HANDLER_NAME, copyRoot);
    machine = await linuxVm({ kind: 'debian', label: 'update' });
    sandbox = machine.sandbox;
  });
  after(async () => {
    await machine?.close();
    if (copyRoot) await fs.rm(copyRoot, { recursive: true, force: true });
  });

  test('A.disable → B.update → A.uninstall → B.install → B.enable all succeed and B owns the installation', async () => {
    assert.notEqual(versionB, versionA);
    const a = await unpackA(sandbox);
    await a.writeSettings(0, { publicSettings: machine.publicSettings });
    assertExit(await a.run('install', { seq: 0 }), 0);
    assertExit(await a.run('enable', { seq: 0 }), 0);
    assert.equal((await sandbox.readState())?.owner, versionA);

    // The goal state asks for B with sequence number 1: B is set up with its settings; A's
    // config has no 1.settings, yet A's disable and uninstall run with ConfigSequenceNumber=1.
    const b = await sandbox.unpack(zipB, versionB);
    await b.writeSettings(1, { publicSettings: machine.publicSettings });
    await assert.rejects(fs.stat(path.join(a.configFolder, '1.settings')));

    let oldUninstall: Awaited<ReturnType<HandlerInstance['agentStatus']>> | undefined;
    const { runs } = await agentUpdate(a, b, 1, {
      beforeRemovingOld: async () => {
        oldUninstall = await a.agentStatus(1);
      },
    });
    assert.deepEqual(
      runs.map((run) => `${run.operation}@${run.env.AZURE_GUEST_AGENT_EXTENSION_VERSION}`),
      [
        `disable@${versionA}`,
        `update@${versionB}`,
        `uninstall@${versionA}`,
        `install@${versionB}`,
        `enable@${versionB}`,
      ],
    );
    for (const run of runs) assertExit(run, 0);
    const [disable, update, uninstall, install, enable] = runs;
    assert.equal(disable?.env.ConfigSequenceNumber, '1');
    assert.equal(update?.env.VERSION, versionB);
    assert.equal(update?.env.AZURE_GUEST_AGENT_UPDATING_FROM_VERSION, versionA);
    assert.equal(update?.env.AZURE_GUEST_AGENT_DISABLE_CMD_EXIT_CODE, '0');
    assert.equal(uninstall?.env.ConfigSequenceNumber, '1');
    assert.equal(install?.env.AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE, '0');
    assert.equal(enable?.env.AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE, '0');

    assert.ok(oldUninstall);
    assert.equal(oldUninstall.status, 'success');
    assert.equal(oldUninstall.operation, 'Uninstall');
    assert.match(
      oldUninstall.message,
      new RegExp(`left the installation in place for version ${versionB.replaceAll('.', '\\.')}`),
    );
    await assert.rejects(fs.stat(a.dir), 'the agent removed A');

    const status = await b.agentStatus(1);
    assert.equal(status.status, 'success');
    assert.equal(status.operation, 'Enable');
    assert.match(
      status.message,
      /nothing needed changing/,
      'the packages stayed installed throughout',
    );
    assert.match(await aadsshloginStatus(machine), /^install ok installed/);
    assert.equal((await b.agentStatus(0)).status, 'success', "A's status files were copied to B");

    const state = await sandbox.readState();
    assert.equal(state?.owner, versionB);
    assert.ok(
      state?.applied.some((entry) => entry.operation === 'update' && entry.version === versionB),
    );

    const lines = await sandbox.readLog();
    assertLogged(lines, 'disable', 1, versionA, [/^Disable started /, /^Disable succeeded/]);
    assertLogged(lines, 'update', 1, versionB, [
      new RegExp(
        `^Update started .*updatingFrom=${versionA.replaceAll('.', '\\.')} updatingTo=${versionB.replaceAll('.', '\\.')}`,
      ),
      /^Update succeeded/,
    ]);
    assertLogged(lines, 'uninstall', 1, versionA, [
      /^Leaving the installation to the version that owns it/,
      /^Uninstall succeeded/,
    ]);
    assertLogged(lines, 'install', 1, versionB, [/^Install succeeded/]);
    assertLogged(lines, 'enable', 1, versionB, [/^Enable succeeded/]);

    // B, now the owner, uninstalls for real.
    const removal = await agentUninstall(b, 1);
    for (const run of removal) assertExit(run, 0);
    assert.equal((await sandbox.readState())?.owner, null);
    assert.equal(await aadsshloginStatus(machine), '', 'purged by the owner');
  });
});

describe('uninstall', () => {
  let sandbox: AgentSandbox;
  let machine!: LinuxVm;
  before(async () => {
    machine = await linuxVm({ kind: 'debian', label: 'uninstall' });
    sandbox = machine.sandbox;
  });
  after(async () => machine?.close());

  test('disable then uninstall succeed, the agent removes the folder, and nobody owns the installation', async () => {
    const handler = await unpackA(sandbox);
    await handler.writeSettings(0, { publicSettings: machine.publicSettings });
    assertExit(await handler.run('install', { seq: 0 }), 0);
    assertExit(await handler.run('enable', { seq: 0 }), 0);
    const statuses: string[] = [];
    const runs = await agentUninstall(handler, 0, {
      beforeRemoving: async () => {
        const status = await handler.agentStatus(0);
        statuses.push(`${status.operation}:${status.status}`);
      },
    });
    assert.deepEqual(
      runs.map((run) => run.operation),
      ['disable', 'uninstall'],
    );
    for (const run of runs) assertExit(run, 0);
    assert.deepEqual(statuses, ['Uninstall:success']);
    await assert.rejects(fs.stat(handler.dir));
    const state = await sandbox.readState();
    assert.equal(state?.owner, null);
    const lines = await sandbox.readLog();
    assertLogged(lines, 'disable', 0, versionA, [/^Disable succeeded/]);
    assertLogged(lines, 'uninstall', 0, versionA, [/^Uninstall succeeded/]);
  });
});

describe('no settings', () => {
  let sandbox: AgentSandbox;
  let machine!: LinuxVm;
  before(async () => {
    machine = await linuxVm({ kind: 'debian', label: 'nosettings' });
    sandbox = machine.sandbox;
  });
  after(async () => machine?.close());

  test('an empty 0.settings with ConfigSequenceNumber=0: the defaults apply, so install goes to packages.microsoft.com', async () => {
    const handler = await unpackA(sandbox);
    await handler.writeNoSettings();
    assert.equal((await fs.stat(path.join(handler.configFolder, '0.settings'))).size, 0);
    const install = await handler.run('install', { seq: null });
    assert.equal(install.env.ConfigSequenceNumber, '0');
    // The test VM cannot reach packages.microsoft.com: the default repository is what it tried.
    assertExit(install, 20);
    assert.match(install.stdout, /https:\/\/packages\.microsoft\.com\/keys\/microsoft\.asc/);
    // The agent reads no status for a handler without settings, but what is there must be valid.
    const status = await handler.agentStatus(0);
    assert.equal(status.status, 'error');
    assert.equal(status.code, 20);
    assert.equal(
      await machine.root.readFile('/etc/apt/sources.list.d/microsoft-prod.list'),
      undefined,
    );
  });
});

describe('protected settings', () => {
  const secret = 's3cr3t-value-123';
  let sandbox: AgentSandbox;
  let machine!: LinuxVm;
  let handler: HandlerInstance;
  let certificates = '';
  const runs: CommandRun[] = [];

  before(async () => {
    machine = await linuxVm({ kind: 'debian', label: 'protected' });
    sandbox = machine.sandbox;
    certificates = await fs.mkdtemp(path.join(os.tmpdir(), 'aad-handler-certs-'));
    handler = await unpackA(sandbox);
  });
  after(async () => {
    await machine?.close();
    await fs.rm(certificates, { recursive: true, force: true });
  });

  test('settings encrypted to the certificate the agent stored are decrypted, and the secret is written nowhere', async () => {
    const { thumbprint, crt } = await makeTestCertificate(sandbox, certificates, 'good', {
      store: true,
    });
    await handler.writeSettings(0, {
      publicSettings: machine.publicSettings,
      protectedSettings: await encryptSettings(crt, JSON.stringify({ secret })),
      protectedSettingsCertThumbprint: thumbprint,
    });
    const install = await handler.run('install', { seq: 0 });
    runs.push(install);
    assertExit(install, 0);
    const enable = await handler.run('enable', { seq: 0 });
    runs.push(enable);
    assertExit(enable, 0);
    assert.equal((await handler.agentStatus(0)).status, 'success');
    const lines = await sandbox.readLog();
    assertLogged(lines, 'enable', 0, versionA, [/^Settings read .*protectedSettings=present/]);
  });

  test('a thumbprint whose certificate is not there fails with 61', async () => {
    await handler.writeSettings(1, {
      publicSettings: machine.publicSettings,
      protectedSettings:
        (await fs.readFile(path.join(handler.configFolder, '0.settings'), 'utf8')).match(
          /"protectedSettings": "([^"]+)"/,
        )?.[1] ?? null,
      protectedSettingsCertThumbprint: 'A'.repeat(40),
    });
    const enable = await handler.run('enable', { seq: 1 });
    runs.push(enable);
    assertExit(enable, 61);
    const status = await handler.agentStatus(1);
    assert.equal(status.status, 'error');
    assert.equal(status.code, 61);
    assert.match(status.message, /A{40}\.crt/);
  });

  test('settings encrypted to another certificate fail with 61', async () => {
    const stored = await makeTestCertificate(sandbox, certificates, 'stored', { store: true });
    const other = await makeTestCertificate(sandbox, certificates, 'other', { store: false });
    await handler.writeSettings(2, {
      publicSettings: machine.publicSettings,
      protectedSettings: await encryptSettings(other.crt, JSON.stringify({ secret })),
      protectedSettingsCertThumbprint: stored.thumbprint,
    });
    const enable = await handler.run('enable', { seq: 2 });
    runs.push(enable);
    assertExit(enable, 61);
    const status = await handler.agentStatus(2);
    assert.equal(status.code, 61);
    assert.match(status.message, /Decrypting with certificate/);
  });

  test('the secret appears in no log, status, state or output', async () => {
    const hits = await filesContaining(
      [sandbox.extensionLogDir, handler.statusFolder, sandbox.stateFolder()],
      secret,
    );
    assert.deepEqual(hits, []);
    for (const run of runs) {
      assert.ok(
        !run.stdout.includes(secret) && !run.stderr.includes(secret),
        `${run.operation} printed the secret`,
      );
    }
  });
});

describe('a malformed HandlerEnvironment.json', () => {
  let sandbox: AgentSandbox;
  before(async () => {
    sandbox = await AgentSandbox.create('badenv', { launcher: vm.launcher });
  });
  after(async () => sandbox.cleanup());

  for (const [what, change] of [
    ['cut short', (text: string) => text.slice(0, Math.floor(text.length / 2))],
    ['missing', undefined],
  ] as const) {
    test(`${what}: enable exits 60 and writes an error status into <handler>/status that the agent accepts`, async () => {
      const handler = await sandbox.unpack(zipA, what === 'missing' ? '9.9.9.1' : '9.9.9.0');
      await handler.writeSettings(0, { publicSettings: {} });
      const file = path.join(handler.dir, 'HandlerEnvironment.json');
      if (change) await fs.writeFile(file, change(await fs.readFile(file, 'utf8')));
      else await fs.rm(file);
      const enable = await handler.run('enable', { seq: 0 });
      assertExit(enable, 60);
      const status = await handler.agentStatus(0);
      assert.equal(status.file, path.join(handler.dir, 'status', '0.status'));
      assert.equal(status.status, 'error');
      assert.equal(status.code, 60);
      assert.match(status.message, /HandlerEnvironment\.json/);
    });
  }
});

describe('two enables at the same moment', () => {
  let sandbox: AgentSandbox;
  let machine!: LinuxVm;
  before(async () => {
    machine = await linuxVm({ kind: 'debian', label: 'concurrent' });
    sandbox = machine.sandbox;
  });
  after(async () => machine?.close());

  test("both succeed, one after the other (the lock), and neither loses the other's state", async (t) => {
    const handler = await unpackA(sandbox);
    await handler.writeSettings(0, { publicSettings: machine.publicSettings });
    assertExit(await handler.run('install', { seq: 0 }), 0);
    const [first, second] = await Promise.all([
      handler.run('enable', { seq: 0 }),
      handler.run('enable', { seq: 0 }),
    ]);
    assert.ok(first && second);
    assertExit(first, 0);
    assertExit(second, 0);
    assert.equal((await handler.agentStatus(0)).status, 'success');
    const state = await sandbox.readState();
    assert.equal(state?.applied.filter((entry) => entry.operation === 'enable').length, 2);

    // Inside the lock each command logs "Settings read" … "Enable succeeded"; those spans of the
    // two processes must not overlap.
    const lines = linesOf(await sandbox.readLog(), 'enable', 0, versionA);
    const pids = [...new Set(lines.map((line) => line.pid))];
    assert.equal(pids.length, 2);
    const spans = pids.map((pid) => {
      const own = lines.filter((line) => line.pid === pid);
      const start = own.find((line) => line.message?.startsWith('Settings read'));
      const end = own.find((line) => line.message?.startsWith('Enable succeeded'));
      assert.ok(start?.timestamp && end?.timestamp, `pid ${pid} logged its locked span`);
      return { pid, start: Date.parse(start.timestamp), end: Date.parse(end.timestamp) };
    });
    const [x, y] = spans;
    assert.ok(x && y);
    assert.ok(
      x.end <= y.start || y.end <= x.start,
      `the locked spans overlap: ${JSON.stringify(spans)}\n${lines.map((line) => line.raw).join('\n')}`,
    );
    const waited = lines.some((line) => line.message?.startsWith('Waiting for another command'));
    t.diagnostic(waited ? 'one enable waited for the lock' : 'the enables did not overlap in time');
  });

  test('an enable that starts while another holds the lock waits for it, then succeeds', async () => {
    // The first enable decrypts protected settings inside the lock with an `openssl` that
    // signals, then sleeps: the second enable starts exactly while the first holds the lock.
    const work = await fs.mkdtemp(path.join(os.tmpdir(), 'aad-handler-lockwait-'));
    // The slow openssl is in `work`, shown inside the VM at the same path.
    const lockVm = await linuxVm({ kind: 'debian', label: 'lockwait', binds: [work] });
    const lockSandbox = lockVm.sandbox;
    try {
      const handler = await unpackA(lockSandbox);
      const { thumbprint, crt } = await makeTestCertificate(lockSandbox, work, 'lock', {
        store: true,
      });
      await handler.writeSettings(0, {
        publicSettings: lockVm.publicSettings,
        protectedSettings: await encryptSettings(crt, JSON.stringify({ value: 'lock-test-1' })),
        protectedSettingsCertThumbprint: thumbprint,
      });
      assertExit(await handler.run('install', { seq: 0 }), 0);
      const slowBin = path.join(work, 'slow-bin');
      const marker = path.join(work, 'first-is-decrypting');
      await fs.mkdir(slowBin);
      const realOpenssl = (await runTool('/bin/sh', ['-c', 'command -v openssl'])).stdout.trim();
      await fs.writeFile(
        path.join(slowBin, 'openssl'),
        `#!/bin/sh\n: > '${marker}'\nsleep 2\nexec '${realOpenssl}' "$@"\n`,
        { mode: 0o755 },
      );
      const first = handler.run('enable', {
        seq: 0,
        agentEnvironment: { PATH: `${slowBin}:${AGENT_PATH}` },
      });
      const deadline = Date.now() + 30_000;
      while (
        !(await fs.stat(marker).then(
          () => true,
          () => false,
        ))
      ) {
        assert.ok(Date.now() < deadline, 'the first enable never reached decryption');
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      const second = await handler.run('enable', { seq: 0 });
      const firstRun = await first;
      assertExit(firstRun, 0);
      assertExit(second, 0);
      assert.equal((await handler.agentStatus(0)).status, 'success');
      const lines = linesOf(await lockSandbox.readLog(), 'enable', 0, versionA);
      const waits = lines.filter((line) => line.message?.startsWith('Waiting for another command'));
      assert.equal(waits.length, 1, lines.map((line) => line.raw).join('\n'));
      const waiter = waits[0]?.pid;
      assert.match(waits[0]?.raw ?? '', /holderOperation=enable/);
      const holderDone = lines.find(
        (line) => line.pid !== waiter && line.message?.startsWith('Enable succeeded'),
      );
      const waiterGoesOn = lines.find(
        (line) => line.pid === waiter && line.message?.startsWith('Settings read'),
      );
      assert.ok(holderDone?.timestamp && waiterGoesOn?.timestamp);
      assert.ok(
        Date.parse(waiterGoesOn.timestamp) >= Date.parse(holderDone.timestamp),
        'the waiting enable went on only after the first finished',
      );
    } finally {
      await lockVm.close();
      await fs.rm(work, { recursive: true, force: true });
    }
  });
});

describe('the entry script when the executable cannot run', () => {
  let sandbox: AgentSandbox;
  before(async () => {
    sandbox = await AgentSandbox.create('fallback', { launcher: vm.launcher });
  });
  after(async () => sandbox.cleanup());

  async function expectCannotStart(handler: HandlerInstance, run: CommandRun, reason: RegExp) {
    assertExit(run, 52);
    const status = await handler.agentStatus(0);
    assert.equal(status.status, 'error');
    assert.equal(status.code, 52);
    assert.equal(status.operation, 'Enable');
    assert.match(status.message, reason);
    assert.match(run.stdout, reason);
    const lines = (await sandbox.readLog()).filter((line) => line.fromScript);
    assert.ok(
      lines.some(
        (line) =>
          reason.test(line.message ?? '') &&
          line.operation === 'enable' &&
          line.sequenceNumber === '0',
      ),
      'the entry script logged why',
    );
  }

  test('a missing executable: exit 52 and an error status', async () => {
    const handler = await sandbox.unpack(zipA, '9.0.0.1');
    await handler.writeSettings(0, { publicSettings: {} });
    await fs.rm(path.join(handler.dir, 'bin', 'linux-x64', 'aadsshlogin-handler'));
    await expectCannotStart(
      handler,
      await handler.run('enable', { seq: 0 }),
      /aadsshlogin-handler is missing/,
    );
  });

  test('an architecture without an executable (uname -m says s390x): exit 52', async () => {
    const handler = await sandbox.unpack(zipA, '9.0.0.2');
    await handler.writeSettings(0, { publicSettings: {} });
    const fakeBin = path.join(sandbox.root, 'fake-s390x-bin');
    await fs.mkdir(fakeBin, { recursive: true });
    await fs.writeFile(path.join(fakeBin, 'uname'), '#!/bin/sh\necho s390x\n', { mode: 0o755 });
    const run = await handler.run('enable', {
      seq: 0,
      agentEnvironment: { PATH: `${fakeBin}:${AGENT_PATH}` },
    });
    await expectCannotStart(handler, run, /this machine is s390x/);
  });

  describe('noexec mounts (in a private mount namespace)', () => {
    let unshareProblem: string | undefined;
    before(async () => {
      const probe = await runTool('unshare', [
        '-m',
        '--propagation',
        'private',
        '/bin/sh',
        '-c',
        'mount --bind / /mnt && umount /mnt',
      ]).catch((error: Error) => ({ exitCode: -1, stdout: '', stderr: error.message }));
      if (probe.exitCode !== 0)
        unshareProblem = `unshare -m cannot mount here: ${probe.stderr.trim()}`;
    });

    /** Runs the agent's argv in a mount namespace where `target` is remounted noexec. */
    const noexec = (target: string) => (argv: readonly string[]) => [
      'unshare',
      '-m',
      '--propagation',
      'private',
      '/bin/sh',
      '-c',
      'mount --bind "$1" "$1" && mount -o remount,bind,noexec "$1" && shift && exec "$@"',
      'noexec',
      target,
      ...argv,
    ];

    test('the executables on a noexec file system: exit 52 and an error status', async (t) => {
      if (unshareProblem) return t.skip(unshareProblem);
      const handler = await sandbox.unpack(zipA, '9.0.0.3');
      await handler.writeSettings(0, { publicSettings: {} });
      const run = await handler.run('enable', {
        seq: 0,
        launcher: noexec(path.join(handler.dir, 'bin')),
      });
      await expectCannotStart(handler, run, /mounted noexec/);
    });

    test('the whole handler folder on a noexec file system: /bin/sh itself cannot start the entry script (126), which the agent reports', async (t) => {
      if (unshareProblem) return t.skip(unshareProblem);
      const handler = await sandbox.unpack(zipA, '9.0.0.4');
      await handler.writeSettings(0, { publicSettings: {} });
      const run = await handler.run('enable', { seq: 0, launcher: noexec(handler.dir) });
      assertExit(run, 126);
      assert.match(run.stderr, /Permission denied/);
      assert.equal(await handler.readStatusText(0), undefined);
    });
  });
});
