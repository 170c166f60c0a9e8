/**
 * The extension events the built AADSSHLoginForLinux zip writes, read by the real agent's
 * collector (WALinuxAgent 2.7.3.0's collect_telemetry_events.py, through agent_status.py
 * `events`): every event of every command is accepted, and together they tell each command's
 * start, each check's result as its status file reports it, and its end with the exit code and
 * the duration. Assumes `npm run package` ran.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  assertExit,
  ensureWaagent,
  extensionVersionOf,
  type HandlerInstance,
  LINUX_HANDLER_NAME,
  requireZip,
} from './agent-driver.js';
import { type LinuxVm, linuxVm } from './vm.js';

const version = extensionVersionOf();

describe('extension events of the Linux zip', () => {
  let vm: LinuxVm;
  let handler: HandlerInstance;
  before(async () => {
    const zip = await requireZip(LINUX_HANDLER_NAME);
    await ensureWaagent();
    vm = await linuxVm({ kind: 'debian', label: 'events' });
    handler = await vm.sandbox.unpack(zip, version);
  });
  after(async () => {
    await vm?.close();
  });

  test('the agent accepts every event: start, each check, end with exit code and duration', async () => {
    /** Each command as its status file reports it, in the order they ran. */
    const commands: { task: string; exitCode: number; status: string; steps: string[] }[] = [];
    const run = async (
      operation: 'install' | 'enable' | 'disable',
      seq: number,
      exitCode: number,
    ) => {
      const result = await handler.run(operation, { seq });
      assertExit(result, exitCode);
      const status = await handler.agentStatus(seq);
      commands.push({
        task: status.operation ?? '',
        exitCode,
        status: status.status,
        steps: status.substatus.map((step) => `Step ${step.name}: ${step.status} `),
      });
    };
    await handler.writeSettings(0, { publicSettings: vm.publicSettings });
    await run('install', 0, 0);
    await run('enable', 0, 0);
    await handler.writeSettings(1, { publicSettings: { repository: { baseUrl: 'ftp://x' } } });
    await run('enable', 1, 53);
    await run('disable', 1, 0);

    const verdict = await handler.agentEvents();
    assert.equal(verdict.files.length, commands.length, 'one file per command');
    // File names start with the time of writing: sorted, they are in the order the commands ran.
    for (const [index, file] of verdict.files.entries()) {
      const command = commands[index];
      assert.ok(command);
      assert.ok(file.collected, `${file.file}: the agent does not collect it`);
      assert.deepEqual(file.dropped, {}, `${file.file}: the agent drops events`);
      assert.equal(file.sent.length, file.events, `${file.file}: the agent sends every event`);
      const messages = file.sent.map((event) => event.Context1);
      assert.match(messages[0] ?? '', new RegExp(`^${command.task} started: version ${version},`));
      assert.match(
        messages.at(-1) ?? '',
        new RegExp(
          `^${command.task} ended: status ${command.status}, exit code ${command.exitCode}, duration \\d+ ms(, \\d+ successful steps not sent)?\\.`,
        ),
      );
      // The steps that ran, at most 8: the others are counted in the end event.
      const ran = command.steps.filter((step) => !step.includes(': transitioning '));
      assert.equal(messages.length, Math.min(ran.length, 8) + 2, messages.join('\n'));
      for (const [step, expected] of ran.slice(0, 8).entries()) {
        assert.ok(messages[step + 1]?.startsWith(expected), `${messages[step + 1]} ≠ ${expected}…`);
      }
      for (const event of file.sent) {
        assert.equal(event.EventName, `${LINUX_HANDLER_NAME}-${version}`);
        assert.equal(event.TaskName, command.task);
        assert.equal(event.Context3, file.sent[0]?.Context3, 'one operation id per command');
      }
    }
    assert.ok(
      commands.some((command) => command.steps.length > 0),
      'some command reported its checks',
    );
  });
});
