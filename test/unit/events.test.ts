import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, test } from 'node:test';
import { HandlerFailure } from '../../src/failures.js';
import type { Extension, Outcome } from '../../src/lifecycle/extension.js';
import { runCommand } from '../../src/lifecycle/pipeline.js';
import {
  type AgentEvent,
  type CommandRecord,
  commandEvents,
  MAX_EVENT_MESSAGE_CHARS,
  MAX_EVENTS_PER_COMMAND,
  MAX_FILES_IN_FOLDER,
  writeEvents,
} from '../../src/protocol/events.js';
import { fakeClock, fakeProcesses, memoryLog, withTemporaryFolder } from '../fakes.js';
import { HANDLER_NAME, handlerLayout, settingsFile } from './bad-input-world.js';

const record = (change: Partial<CommandRecord> = {}): CommandRecord => ({
  task: 'Enable',
  version: '1.0.0.0',
  sequenceNumber: 3,
  startedAt: new Date('2026-01-02T03:04:05.000Z'),
  endedAt: new Date('2026-01-02T03:04:06.250Z'),
  status: 'success',
  exitCode: 0,
  message: 'Enable succeeded: ready.',
  steps: [{ name: 'OperatingSystem', status: 'success', code: 0, message: 'Debian 12.' }],
  ...change,
});

describe('the events of one command', () => {
  test('say its start, each step, and its end with duration and exit code, in the agent format', () => {
    const events = commandEvents(record());
    assert.deepEqual(
      events.map((event) => event.Message),
      [
        'Enable started: version 1.0.0.0, sequence number 3.',
        'Step OperatingSystem: success (code 0): Debian 12.',
        'Enable ended: status success, exit code 0, duration 1250 ms. Enable succeeded: ready.',
      ],
    );
    for (const event of events) {
      // Every key the agent requires, each a non-empty string (2.7.3.0 strips every value).
      for (const key of [
        'Version',
        'Timestamp',
        'TaskName',
        'EventLevel',
        'Message',
        'EventPid',
        'EventTid',
        'OperationId',
      ] as const) {
        assert.equal(typeof event[key], 'string', key);
        assert.ok(event[key].length > 0, key);
      }
      assert.equal(event.OperationId, events[0]?.OperationId, 'one operation id per command');
    }
    assert.equal(events[0]?.Timestamp, '2026-01-02T03:04:05.000Z');
  });

  test('are capped in number (errors and warnings kept, steps not run left out) and in message length', () => {
    const steps = Array.from({ length: 20 }, (_, i) => ({
      name: `Step${i}`,
      status:
        i === 5 ? ('error' as const) : i > 5 ? ('transitioning' as const) : ('success' as const),
      code: i === 5 ? 27 : 0,
      message: 'x'.repeat(5000),
    }));
    steps.unshift(
      ...Array.from({ length: 6 }, (_, i) => ({
        name: `Check${i}`,
        status: 'success' as const,
        code: 0,
        message: 'ok',
      })),
    );
    const events = commandEvents(record({ steps, status: 'error', exitCode: 27 }));
    assert.equal(events.length, MAX_EVENTS_PER_COMMAND);
    assert.match(events[1]?.Message ?? '', /^Step Check0: success/);
    assert.match(events.at(-2)?.Message ?? '', /^Step Step5: error \(code 27\)/);
    assert.ok(!events.some((event) => /transitioning/.test(event.Message)), 'no step not run');
    assert.match(events.at(-1)?.Message ?? '', /exit code 27, .*4 successful steps not sent/);
    assert.equal(events.at(-1)?.EventLevel, 'Error');
    for (const event of events) assert.ok(event.Message.length <= MAX_EVENT_MESSAGE_CHARS);
  });
});

describe('writing events into the agent folder', () => {
  const now = new Date('2026-01-02T03:04:05.000Z');

  test('one <digits>.json file, mode 0600, written by rename (no temporary file left)', async () => {
    await withTemporaryFolder(async (folder) => {
      const events = commandEvents(record());
      const written = await writeEvents(folder, events, now);
      assert.ok('file' in written);
      assert.deepEqual(await readdir(folder), [path.basename(written.file)]);
      assert.match(path.basename(written.file), /^\d+\.json$/);
      assert.equal((await stat(written.file)).mode & 0o777, 0o600);
      assert.deepEqual(JSON.parse(await readFile(written.file, 'utf8')), events);
    });
  });

  test('nothing through a symlinked folder, into a missing one or a full one', async () => {
    await withTemporaryFolder(async (dir) => {
      const events = commandEvents(record());
      const real = path.join(dir, 'real');
      await mkdir(real);
      await symlink(real, path.join(dir, 'link'));
      assert.match(
        skipped(await writeEvents(path.join(dir, 'link'), events, now)),
        /is not a folder/,
      );
      assert.deepEqual(await readdir(real), []);
      assert.match(
        skipped(await writeEvents(path.join(dir, 'missing'), events, now)),
        /does not exist/,
      );
      for (let i = 0; i < MAX_FILES_IN_FOLDER; i++) {
        await writeFile(path.join(real, `${i}.json`), '[]');
      }
      assert.match(skipped(await writeEvents(real, events, now)), /already holds 30 files or more/);
      assert.equal((await readdir(real)).length, MAX_FILES_IN_FOLDER);
    });
  });
});

describe('events of a command run by the pipeline', () => {
  const extension = (outcome: () => Promise<Outcome>): Extension<Record<string, unknown>> => ({
    handlerName: HANDLER_NAME,
    logFileName: 'test.log',
    parseSettings: (settings) => ({ settings, warnings: [] }),
    run: {
      install: outcome,
      enable: outcome,
      disable: outcome,
      uninstall: outcome,
      update: outcome,
    },
  });

  async function run(
    work: () => Promise<Outcome>,
    change?: (handlerEnvironment: Record<string, unknown>) => void,
  ) {
    const layout = await handlerLayout();
    const log = memoryLog();
    try {
      await layout.writeSettings(0, settingsFile({}));
      if (change) {
        const [entry] = layout.environment as [{ handlerEnvironment: Record<string, unknown> }];
        change(entry.handlerEnvironment);
        await layout.writeEnvironment(JSON.stringify(layout.environment));
      }
      const result = await runCommand('enable', {
        extension: extension(work),
        version: '1.0.0.0',
        handlerDir: layout.handlerDir,
        env: { ConfigSequenceNumber: '0' },
        clock: fakeClock(),
        processes: fakeProcesses(() => ({})),
        createLog: () => log,
      });
      const events: AgentEvent[] = [];
      for (const name of await readdir(layout.events)) {
        events.push(...JSON.parse(await readFile(path.join(layout.events, name), 'utf8')));
      }
      return { result, events, log };
    } finally {
      await layout.cleanup();
    }
  }

  test("a failing command's events carry its failing step and exit code", async () => {
    const step = { name: 'Packages', status: 'error' as const, code: 1, message: 'apt failed.' };
    const { result, events } = await run(async () => {
      throw new HandlerFailure('packageManagerFailed', 'apt failed.', { steps: [step] });
    });
    assert.notEqual(result.exitCode, 0);
    assert.deepEqual(
      events.map((event) => event.EventLevel),
      ['Informational', 'Error', 'Error'],
    );
    assert.match(events[1]?.Message ?? '', /^Step Packages: error \(code 1\): apt failed\.$/);
    assert.match(events[2]?.Message ?? '', new RegExp(`exit code ${result.exitCode}, duration`));
  });

  test('no events folder in HandlerEnvironment.json: no events; an unusable one: logged only', async () => {
    const succeed = async (): Promise<Outcome> => ({ status: 'success', message: 'done.' });
    const without = await run(succeed, (handlerEnvironment) => {
      delete handlerEnvironment.eventsFolder;
    });
    assert.equal(without.result.exitCode, 0);
    assert.deepEqual(without.events, []);
    const missing = await run(succeed, (handlerEnvironment) => {
      handlerEnvironment.eventsFolder = '/nonexistent/events';
    });
    assert.equal(missing.result.exitCode, 0);
    assert.ok(
      missing.log.lines.some(
        (line) => line.level === 'warn' && line.message.startsWith('No events written'),
      ),
    );
  });
});

function skipped(result: { file: string } | { skipped: string }): string {
  assert.ok('skipped' in result, 'no file was written');
  return result.skipped;
}
