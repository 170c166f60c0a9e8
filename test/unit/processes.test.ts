/**
 * The real process runner (src/io/processes.ts) under Node.js; the package tests run the Bun side
 * in every command of the shipped executable.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { systemProcesses } from '../../src/io/processes.js';

describe('systemProcesses.run', () => {
  test('a program that is not there is exit code 127, not a throw', async () => {
    const result = await systemProcesses.run('/nonexistent/program', []);
    assert.equal(result.exitCode, 127);
    assert.match(result.stderr, /ENOENT/);
  });

  test('exit code, both outputs, input and extra environment reach the caller', async () => {
    const result = await systemProcesses.run(
      'sh',
      ['-c', 'cat; printf "%s" "$EXTRA" >&2; exit 3'],
      { input: 'from stdin\n', env: { EXTRA: 'from env' } },
    );
    assert.deepEqual(result, { exitCode: 3, stdout: 'from stdin\n', stderr: 'from env' });
  });

  test('a child killed by a signal is 128 + its number', async () => {
    const result = await systemProcesses.run('sh', ['-c', 'kill -9 $$']);
    assert.equal(result.exitCode, 137);
  });

  test('an aborted run stops the child: SIGTERM, then SIGKILL, without waiting for what it started', async () => {
    const controller = new AbortController();
    const deadline = new Error('the deadline passed');
    setTimeout(() => controller.abort(deadline), 200);
    // The shell ignores SIGTERM, and the sleep it leaves behind keeps its output open.
    await assert.rejects(
      systemProcesses.run('sh', ['-c', 'trap "" TERM; sleep 8 & wait; sleep 8'], {
        signal: controller.signal,
      }),
      (error) => error === deadline,
    );
  });

  test('an already aborted run starts nothing', async () => {
    const controller = new AbortController();
    controller.abort(new Error('too late'));
    await assert.rejects(
      systemProcesses.run('sh', ['-c', 'exit 0'], { signal: controller.signal }),
      /too late/,
    );
  });
});
