/**
 * The checks that stop the first install of the built AADSSHLoginForLinux zip, as the real guest
 * agent reports them (agent-vm.ts; agent-protocol.md §1.2, §4.4): the install exits with the
 * check's code, the agent sets the handler NotReady with code 1007 and its own message
 * `Non-zero exit code: <code>, …/aadsshlogin-handler.sh install`, and, the handler never having
 * been installed, it uploads no extension status at all (the portal shows the extension as
 * Transitioning, and the agent's message is all the operator reads: the exit code must be right).
 * The handler's own status file, which the agent leaves unread, names the failed check; nothing is
 * installed on the VM. Scenarios: no system-assigned identity (22), AADLoginForLinux's package
 * (23), an AADLoginForLinux folder in /var/lib/waagent (23, after which the agent itself removes
 * the orphan folder and the next goal state installs), Debian 8 (51).
 *
 * Runs with Debian's waagent 2.7.3.0, and with an upstream checkout when one is in the test
 * cache. Assumes `npm run package` ran.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { osReleaseFixture } from '../fixtures.js';
import { extensionVersionOf, LINUX_HANDLER_NAME, requireZip } from './agent-driver.js';
import {
  AGENT_LIB_DIR,
  type AgentCode,
  type AgentVm,
  APT_KEYRING,
  APT_SOURCE_FILE,
  commandSummary,
  debianAgent,
  dpkgPackages,
  handlerIn,
  installStandIn,
  upstreamAgent,
  waitFor,
  withAgentVm,
} from './agent-vm.js';
import { LEGACY_VERSION } from './repos.js';
import { IDENTITY_NOT_FOUND, TOKEN_PATH } from './world.js';

const version = extensionVersionOf();
/** AADLoginForLinux's handler name (its folders are `<Lib.Dir>/<name>-<version>`). */
const LEGACY_HANDLER_NAME = 'Microsoft.Azure.ActiveDirectory.LinuxSSH.AADLoginForLinux';

const agents = [await debianAgent(), await upstreamAgent()].filter(
  (agent): agent is AgentCode => agent !== undefined,
);

/**
 * Publishes the first goal state, starts the agent and asserts that the install stopped with
 * `exitCode` at the check `check` (a substatus name), reported as the agent reports a failed
 * install, with nothing installed.
 */
async function assertInstallStopped(
  vm: AgentVm,
  exitCode: number,
  check: string,
  timeoutMs?: number,
): Promise<void> {
  await vm.addPackage(version, await requireZip(LINUX_HANDLER_NAME));
  const incarnation = await vm.publish(firstGoal(vm));
  await vm.startAgent();
  const upload = await vm.waitForStatus(
    `the install failing with ${exitCode}`,
    (blob) => handlerIn(blob)?.status === 'NotReady',
    { incarnation, ...(timeoutMs === undefined ? {} : { timeoutMs }) },
  );

  // The status blob: the agent's handler status, no extension status.
  const handler = handlerIn(upload.blob);
  assert.equal(handler?.handlerVersion, version);
  assert.equal(handler?.code, 1007, 'the agent’s code for a failed install');
  assert.match(
    handler?.formattedMessage?.message ?? '',
    new RegExp(
      `^\\[ExtensionOperationError\\] Non-zero exit code: ${exitCode}, ${vm.handlerDir(version)}/handler/aadsshlogin-handler\\.sh install\\n`,
    ),
  );
  assert.equal(handler?.runtimeSettingsStatus, undefined, 'no extension status before an install');

  // The agent's state and the commands it ran: the install only, with the check's exit code.
  assert.equal(await vm.handlerState(version), 'NotInstalled');
  assert.deepEqual(commandSummary(await vm.commands()), [`${version} install seq=0 → ${exitCode}`]);

  // The handler's own status file names the check.
  const text = await vm.vm.root.readFile(`${vm.handlerDir(version)}/status/0.status`);
  const [own] = JSON.parse(text ?? '[]') as [
    { status: { status: string; code: number; substatus: { name: string; status: string }[] } },
  ];
  assert.equal(own.status.status, 'error');
  assert.equal(own.status.code, exitCode);
  assert.deepEqual(
    own.status.substatus.filter((entry) => entry.status === 'error').map((entry) => entry.name),
    [check],
  );

  // Nothing installed, no repository configured.
  const known = await dpkgPackages(vm.vm);
  assert.equal(known.get('aadsshlogin'), undefined);
  assert.equal(await vm.vm.root.readFile(APT_SOURCE_FILE), undefined);
  assert.equal(await vm.vm.root.readFile(APT_KEYRING), undefined);
}

/** The first goal state, X enabled with the VM's repository settings. */
function firstGoal(vm: AgentVm) {
  return {
    version,
    state: 'enabled' as const,
    settings: { seqNo: 0, publicSettings: vm.publicSettings },
  };
}

/** Each check that stops the first install, for one agent; every scenario has its own VM. */
function checkScenarios(agent: AgentCode): void {
  test('no system-assigned identity: NotReady with the agent’s "Non-zero exit code: 22"; nothing installed', async () => {
    const imds = { [TOKEN_PATH]: [IDENTITY_NOT_FOUND] };
    await withAgentVm({ agent, label: 'agent-no-identity', imds }, async (vm) => {
      // The handler asks again for 2 minutes (an identity assigned a moment ago takes time).
      await assertInstallStopped(vm, 22, 'ManagedIdentity', 420_000);
      assert.ok((await vm.vm.world.imdsRequests(TOKEN_PATH)).length > 1, 'IMDS asked again');
    });
  });

  test('AADLoginForLinux remnants (its aadlogin package): 23, the same way', async () => {
    await withAgentVm({ agent, label: 'agent-legacy' }, async (vm) => {
      await installStandIn(vm.vm, { name: 'aadlogin', version: LEGACY_VERSION });
      await assertInstallStopped(vm, 23, 'LegacyExtension');
      const aadlogin = (await dpkgPackages(vm.vm)).get('aadlogin');
      assert.equal(aadlogin?.status, 'installed', 'left alone');
    });
  });

  test('an AADLoginForLinux folder left in /var/lib/waagent: 23; the agent then removes that orphan folder itself, and the next goal state installs', async () => {
    await withAgentVm({ agent, label: 'agent-legacy-folder' }, async (vm) => {
      const folder = `${AGENT_LIB_DIR}/${LEGACY_HANDLER_NAME}-1.0.1588.3`;
      const manifest = `${folder}/HandlerManifest.json`;
      await vm.vm.root.writeFile(manifest, '[]');
      await assertInstallStopped(vm, 23, 'LegacyExtension');
      // The agent deletes the folder of a handler its goal state does not name once it has
      // processed the goal state, running none of its commands (agent-protocol.md §6.3).
      await waitFor('the agent to remove the folder', async () =>
        (await vm.vm.root.readFile(manifest)) === undefined ? true : undefined,
      );
      const incarnation = await vm.publish(firstGoal(vm));
      await vm.waitForStatus(
        'the handler enabled',
        (blob) =>
          handlerIn(blob)?.runtimeSettingsStatus?.settingsStatus.status.status === 'success',
        { incarnation },
      );
      assert.deepEqual(commandSummary(await vm.commands()).slice(1), [
        `${version} install seq=0 → 0`,
        `${version} enable seq=0 → 0`,
      ]);
    });
  });

  test('an unsupported /etc/os-release (Debian 8): 51, the same way', async () => {
    const osRelease = await osReleaseFixture('debian-8');
    await withAgentVm({ agent, label: 'agent-debian-8', osRelease }, async (vm) => {
      await assertInstallStopped(vm, 51, 'OperatingSystem');
    });
  });
}

// The scenarios run side by side, the others while the handler asks IMDS again for two minutes.
describe('a check stops the first install', { concurrency: true }, () => {
  for (const agent of agents) {
    describe(agent.label, { concurrency: true }, () => checkScenarios(agent));
  }
});
