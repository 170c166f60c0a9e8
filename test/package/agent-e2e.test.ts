/**
 * The built AADSSHLoginForLinux zip run by the real guest agent: the unmodified
 * `waagent -run-exthandlers` process in a sandboxed VM (agent-vm.ts), driven only through the goal
 * state of a fake WireServer, as CRP drives it on Azure (agent-protocol.md §6, §9). Each scenario
 * checks what the agent uploads in the status blob, its HandlerState, the commands it ran
 * (CommandExecution.log, waagent.log) and the VM itself (packages, repository file).
 *
 * Runs with Debian's waagent 2.7.3.0, and also with an upstream WALinuxAgent checkout when one is
 * in the test cache (agent-vm.ts `upstreamAgentDir`). The checks that stop an install (22, 23, 51)
 * are in agent-e2e-checks.test.ts. Assumes `npm run package` ran.
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { CHECKS } from '../../src/linux/checks/index.js';
import { CONVERGE_STEPS } from '../../src/linux/installer.js';
import {
  buildNextVersion,
  extensionVersionOf,
  LINUX_HANDLER_NAME,
  type NextBuild,
  requireZip,
} from './agent-driver.js';
import {
  type AgentCode,
  type AgentVm,
  APT_KEYRING,
  APT_SOURCE_FILE,
  agentVm,
  commandSummary,
  debianAgent,
  dpkgPackages,
  handlerIn,
  installedPackages,
  installStandIn,
  packageActions,
  processesInNamespace,
  type UploadedHandlerStatus,
  type UploadedStatus,
  upstreamAgent,
  waitFor,
  withAgentVm,
} from './agent-vm.js';
import { LEGACY_VERSION, NEW_VERSION } from './repos.js';

/** X: the version of this checkout. */
const version = extensionVersionOf();
let zip = '';

/**
 * X+1: the same code built with the next revision, for the update scenarios. The build (about
 * 20 s) starts with the file and runs while the first scenarios do; the update scenarios wait
 * for it.
 */
let next: Promise<NextBuild>;

before(async () => {
  zip = await requireZip(LINUX_HANDLER_NAME);
  next = buildNextVersion();
  // Awaited by the scenarios that need it; a failure is theirs, not an unhandled rejection.
  next.catch(() => undefined);
});

after(async () => {
  const built = await next?.catch(() => undefined);
  if (built) await fs.rm(built.copy, { recursive: true, force: true });
});

const agents = [await debianAgent(), await upstreamAgent()].filter(
  (agent): agent is AgentCode => agent !== undefined,
);

/** The handler's entry of a blob; fails the test when the blob has none. */
function handlerOf(blob: UploadedStatus): UploadedHandlerStatus {
  const handler = handlerIn(blob);
  assert.ok(handler, `the status blob has no entry for ${LINUX_HANDLER_NAME}`);
  return handler;
}

/** A blob whose handler entry is `handlerVersion`, Ready, and reports success for `seq`. */
function enabledWith(handlerVersion: string, seq: number) {
  return (blob: UploadedStatus) => {
    const handler = handlerIn(blob);
    const status = handler?.runtimeSettingsStatus;
    return (
      handler?.handlerVersion === handlerVersion &&
      handler.status === 'Ready' &&
      status?.sequenceNumber === seq &&
      status.settingsStatus.status.status === 'success'
    );
  };
}

/** Asserts that the blob shows the handler enabled with a successful status of `seq`. */
function assertEnabled(blob: UploadedStatus, handlerVersion: string, seq: number): void {
  const handler = handlerOf(blob);
  assert.equal(handler.handlerVersion, handlerVersion);
  assert.equal(handler.status, 'Ready');
  assert.equal(handler.code, 0);
  assert.equal(handler.formattedMessage?.message, 'Plugin enabled');
  const runtime = handler.runtimeSettingsStatus;
  assert.equal(runtime?.sequenceNumber, seq);
  const status = runtime.settingsStatus.status;
  assert.equal(status.status, 'success', status.formattedMessage?.message);
  assert.equal(status.code, 0);
  assert.equal(status.operation, 'Enable');
  assert.deepEqual(
    (status.substatus ?? []).map((entry) => [entry.name, entry.status]),
    [...CHECKS, ...CONVERGE_STEPS].map((name) => [name, 'success']),
  );
}

/** Asserts that aadsshlogin is installed once, from our repository file, in the VM. */
async function assertInstalledOnce(vm: AgentVm): Promise<void> {
  assert.equal((await installedPackages(vm.vm)).get('aadsshlogin'), NEW_VERSION);
  assert.deepEqual(await packageActions(vm.vm, 'aadsshlogin'), [`install ${NEW_VERSION}`]);
  assert.match(
    (await vm.vm.root.readFile(APT_SOURCE_FILE)) ?? '',
    new RegExp(`^deb \\[arch=amd64 signed-by=${APT_KEYRING}\\] ${vm.vm.server.url}/repos/`, 'm'),
  );
}

/** Commands the agent ran after the first `count` (those of the step under test). */
async function commandsAfter(vm: AgentVm, count: number): Promise<string[]> {
  return commandSummary((await vm.commands()).slice(count));
}

/** The goal state of version `handlerVersion` enabled with the VM's repository settings. */
function enabled(vm: AgentVm, handlerVersion: string, seqNo = 0) {
  return {
    version: handlerVersion,
    state: 'enabled' as const,
    settings: { seqNo, publicSettings: vm.publicSettings },
  };
}

/**
 * Publishes the first goal state (X enabled), starts the agent and waits until it reports the
 * handler enabled; returns that status blob and the goal state's incarnation.
 */
async function installAndEnable(
  vm: AgentVm,
): Promise<{ blob: UploadedStatus; incarnation: number }> {
  await vm.addPackage(version, zip);
  const incarnation = await vm.publish(enabled(vm, version));
  await vm.startAgent();
  const upload = await vm.waitForStatus('the handler enabled', enabledWith(version, 0), {
    incarnation,
  });
  return { blob: upload.blob, incarnation };
}

/**
 * One VM through its life, each step starting where the one before left it: install and enable,
 * the agent restarted, new settings, the update to X+1, uninstall, and the VM closed.
 */
function lifecycle(agent: AgentCode): void {
  let vm: AgentVm;
  /** The first goal state's incarnation, processed again after the restart. */
  let firstIncarnation = 0;
  /** The handler version installed: X, then X+1 once the update scenario ran. */
  let current = version;

  before(async () => {
    vm = await agentVm({ agent, label: 'agent-lifecycle' });
  });
  after(async () => {
    await vm?.close();
  });

  test('install and enable: handler Ready, extension status success, aadsshlogin installed, repository configured', async () => {
    const { blob, incarnation } = await installAndEnable(vm);
    firstIncarnation = incarnation;
    assert.equal(blob.aggregateStatus.guestAgentStatus.version, agent.version, 'that agent ran');
    assertEnabled(blob, version, 0);
    assert.equal(await vm.handlerState(version), 'Enabled');
    assert.deepEqual(commandSummary(await vm.commands()), [
      `${version} install seq=0 → 0`,
      `${version} enable seq=0 → 0`,
    ]);
    await assertInstalledOnce(vm);
    assert.ok((await vm.vm.root.readFile(APT_KEYRING))?.length, 'the keyring is there');
  });

  test('the agent restarts with the same goal state: enable runs again, still success, nothing installed twice', async () => {
    const before = (await vm.commands()).length;
    await vm.stopAgent();
    const uploads = (await vm.statusUploads()).length;
    await vm.startAgent();
    await waitFor('the enable after the restart to end', async () => {
      const ran = await vm.commands();
      return ran.length > before && ran.at(-1)?.exitCode !== undefined ? ran : undefined;
    });
    const upload = await vm.waitForStatus('the handler enabled again', enabledWith(version, 0), {
      after: uploads,
      incarnation: firstIncarnation,
    });
    assertEnabled(upload.blob, version, 0);
    assert.deepEqual(await commandsAfter(vm, before), [`${version} enable seq=0 → 0`]);
    assert.equal(await vm.handlerState(version), 'Enabled');
    await assertInstalledOnce(vm);
  });

  test('new public settings (sequence number 1): enable with 1, and 1.status success', async () => {
    const before = (await vm.commands()).length;
    // The same repository, its key's fingerprint written differently: new settings, same meaning.
    const { baseUrl, keyFingerprints } = vm.vm.publicSettings.repository;
    const spaced = keyFingerprints.map((key) => key.toLowerCase().replace(/(.{4})(?!$)/g, '$1 '));
    const incarnation = await vm.publish({
      version,
      state: 'enabled',
      settings: { seqNo: 1, publicSettings: { repository: { baseUrl, keyFingerprints: spaced } } },
    });
    const upload = await vm.waitForStatus('sequence number 1 enabled', enabledWith(version, 1), {
      incarnation,
    });
    assertEnabled(upload.blob, version, 1);
    assert.deepEqual(await commandsAfter(vm, before), [`${version} enable seq=1 → 0`]);
    const text = await vm.vm.root.readFile(`${vm.handlerDir(version)}/status/1.status`);
    const [status] = JSON.parse(text ?? '[]') as [{ status: { status: string } }];
    assert.equal(status.status.status, 'success');
    assert.ok(await vm.vm.root.readFile(`${vm.handlerDir(version)}/config/1.settings`));
    await assertInstalledOnce(vm);
  });

  test('update from X to X+1: old disable, new update, old uninstall, new install, new enable; the packages stay', async () => {
    const built = await next;
    const before = (await vm.commands()).length;
    const actionsBefore = await packageActions(vm.vm, 'aadsshlogin');
    await vm.addPackage(built.version, built.zip);
    const incarnation = await vm.publish(enabled(vm, built.version, 1));
    const upload = await vm.waitForStatus(
      `${built.version} enabled`,
      enabledWith(built.version, 1),
      { incarnation },
    );
    current = built.version;
    assertEnabled(upload.blob, built.version, 1);
    const ran = (await vm.commands()).slice(before);
    assert.deepEqual(commandSummary(ran), [
      `${version} disable seq=1 → 0`,
      `${built.version} update seq=1 → 0`,
      `${version} uninstall seq=1 → 0`,
      `${built.version} install seq=1 → 0`,
      `${built.version} enable seq=1 → 0`,
    ]);
    const update = ran[1];
    assert.equal(update?.env.AZURE_GUEST_AGENT_UPDATING_FROM_VERSION, version);
    assert.equal(update?.env.VERSION, built.version);
    assert.equal(await vm.handlerState(built.version), 'Enabled');
    assert.equal(await vm.handlerState(version), undefined, "the old version's folder is gone");
    // Never removed in between: dpkg did nothing to the package during the whole update.
    assert.deepEqual(await packageActions(vm.vm, 'aadsshlogin'), actionsBefore);
    await assertInstalledOnce(vm);
  });

  test('uninstall: disable and uninstall, packages purged, repository file gone, handler gone from the status blob', async () => {
    const before = (await vm.commands()).length;
    const incarnation = await vm.publish({
      version: current,
      state: 'uninstall',
      settings: { seqNo: 1, publicSettings: vm.publicSettings },
    });
    const upload = await vm.waitForStatus(
      'the handler gone',
      (blob) => handlerIn(blob) === undefined,
      { incarnation },
    );
    assert.deepEqual(upload.blob.aggregateStatus.handlerAggregateStatus, []);
    assert.deepEqual(await commandsAfter(vm, before), [
      `${current} disable seq=1 → 0`,
      `${current} uninstall seq=1 → 0`,
    ]);
    assert.equal(await vm.handlerState(current), undefined, 'the handler folder is removed');
    // Purged: dpkg's database forgets the package (not even `config-files` remains).
    const known = await dpkgPackages(vm.vm);
    assert.equal(known.get('aadsshlogin'), undefined);
    assert.equal(known.get('aadsshlogin-selinux'), undefined);
    assert.deepEqual(await packageActions(vm.vm, 'aadsshlogin'), [
      `install ${NEW_VERSION}`,
      `remove ${NEW_VERSION}`,
    ]);
    assert.equal(await vm.vm.root.readFile(APT_SOURCE_FILE), undefined, 'repository file gone');
    assert.equal(await vm.vm.root.readFile(APT_KEYRING), undefined, 'keyring gone');
  });

  test('closing the VM ends the agent and every namespace, process and mount it had, and removes its files', async () => {
    const vmNamespaces = await vm.namespaces();
    assert.ok(vmNamespaces, 'the agent ran in the VM');
    const worldNamespaces = await Promise.all(
      ['mnt', 'net'].map((kind) => fs.readlink(`/proc/${vm.vm.world.pid}/ns/${kind}`)),
    );
    const folders = [vm.vm.root.dir, vm.vm.world.dir, vm.vm.sandbox.root];
    await vm.close();
    for (const namespace of [vmNamespaces.pid, vmNamespaces.mnt, ...worldNamespaces]) {
      assert.deepEqual(await processesInNamespace(namespace), [], `nothing left in ${namespace}`);
    }
    const mounts = await fs.readFile('/proc/self/mountinfo', 'utf8');
    for (const folder of folders) {
      assert.equal(mounts.includes(folder), false, `nothing mounted on ${folder}`);
      const stat = await fs.stat(folder).catch(() => undefined);
      assert.equal(stat, undefined, `${folder} removed`);
    }
  });
}

/**
 * X installed and enabled, then AADLoginForLinux's package appears, so X+1's `update` stops on
 * its check (23); once the package is removed, the next goal state retries the update.
 */
async function failedUpdate(agent: AgentCode): Promise<void> {
  const built = await next;
  await withAgentVm({ agent, label: 'agent-failed-update' }, async (vm) => {
    await installAndEnable(vm);
    await installStandIn(vm.vm, { name: 'aadlogin', version: LEGACY_VERSION });
    await vm.addPackage(built.version, built.zip);
    const before = (await vm.commands()).length;
    const failing = await vm.publish(enabled(vm, built.version));
    const failed = await vm.waitForStatus(
      'the update failed',
      (blob) => handlerIn(blob)?.status === 'NotReady',
      { incarnation: failing },
    );
    const handler = handlerOf(failed.blob);
    assert.equal(handler.handlerVersion, built.version);
    assert.equal(handler.code, 1008);
    assert.match(
      handler.formattedMessage?.message ?? '',
      /Non-zero exit code: 23, \S+\/handler\/aadsshlogin-handler\.sh update/,
    );
    assert.deepEqual(await commandsAfter(vm, before), [
      `${version} disable seq=0 → 0`,
      `${built.version} update seq=0 → 23`,
    ]);
    assert.equal(await vm.handlerState(built.version), 'FailedUpgrade');
    assert.equal(await vm.handlerState(version), 'Installed', 'the old version stays, disabled');
    await assertInstalledOnce(vm);

    // Fixed: AADLoginForLinux removed. The next goal state (the same request) retries the update.
    const purge = await vm.vm.world.exec(['dpkg', '--purge', 'aadlogin']);
    assert.equal(purge.exitCode, 0, purge.stderr);
    const retryFrom = (await vm.commands()).length;
    const retry = await vm.publish(enabled(vm, built.version));
    const upload = await vm.waitForStatus(
      `${built.version} enabled`,
      enabledWith(built.version, 0),
      { incarnation: retry },
    );
    assertEnabled(upload.blob, built.version, 0);
    // The old version is no longer enabled: no disable this time.
    assert.deepEqual(await commandsAfter(vm, retryFrom), [
      `${built.version} update seq=0 → 0`,
      `${version} uninstall seq=0 → 0`,
      `${built.version} install seq=0 → 0`,
      `${built.version} enable seq=0 → 0`,
    ]);
    assert.equal(await vm.handlerState(built.version), 'Enabled');
    assert.equal(await vm.handlerState(version), undefined);
    await assertInstalledOnce(vm);
  });
}

// The VMs are independent: each agent's, and for each the lifecycle's (whose steps follow each
// other) and the failed update's, run side by side.
describe('the real guest agent runs the built zip', { concurrency: true }, () => {
  for (const agent of agents) {
    describe(agent.label, { concurrency: true }, () => {
      describe('one VM through its life', { concurrency: false }, () => lifecycle(agent));
      test('an update whose new update fails: 1008 and FailedUpgrade; the next goal state retries and succeeds once fixed', () =>
        failedUpdate(agent));
    });
  }
});
