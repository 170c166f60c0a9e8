import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, test } from 'node:test';
import { HandlerFailure } from '../../src/failures.js';
import { systemClock } from '../../src/io/clock.js';
import { acquireLock, type ProcessTable } from '../../src/protocol/lock.js';
import { temporaryFolder } from '../fakes.js';

const options = (file: string, extra: Partial<Parameters<typeof acquireLock>[0]> = {}) => ({
  file,
  operation: 'enable',
  version: '1.0.0.0',
  clock: systemClock,
  waitMs: 5000,
  pollMs: 10,
  ...extra,
});

describe('lock', () => {
  test('a second taker waits until the first releases', async () => {
    const { dir, cleanup } = await temporaryFolder();
    try {
      const file = path.join(dir, 'state', 'lock');
      const first = await acquireLock(options(file));
      const order: string[] = [];
      let waited = false;
      const second = acquireLock(
        options(file, {
          onWait: () => {
            waited = true;
          },
        }),
      ).then((lock) => {
        order.push('second acquired');
        return lock;
      });
      await new Promise((resolve) => setTimeout(resolve, 100));
      order.push('first releases');
      await first.release();
      await (await second).release();
      assert.equal(waited, true);
      assert.deepEqual(order, ['first releases', 'second acquired']);
    } finally {
      await cleanup();
    }
  });

  test('a holder that is still alive past the wait fails with code 62, naming it', async () => {
    const { dir, cleanup } = await temporaryFolder();
    try {
      const file = path.join(dir, 'lock');
      const held = await acquireLock(options(file, { operation: 'install', version: '0.9.0.0' }));
      await assert.rejects(acquireLock(options(file, { waitMs: 100 })), (error) => {
        assert.ok(error instanceof HandlerFailure);
        assert.equal(error.code, 62);
        assert.match(
          error.detail,
          new RegExp(`install, version 0\\.9\\.0\\.0, pid ${process.pid}`),
        );
        return true;
      });
      await held.release();
    } finally {
      await cleanup();
    }
  });

  test('a lock left by a killed process is taken over', async () => {
    const { dir, cleanup } = await temporaryFolder();
    try {
      const file = path.join(dir, 'lock');
      await writeFile(
        file,
        JSON.stringify({
          pid: 999999,
          startTime: '1',
          operation: 'install',
          version: '1',
          acquiredAt: 'then',
        }),
      );
      const lock = await acquireLock(options(file, { waitMs: 1000 }));
      assert.equal(JSON.parse(await readFile(file, 'utf8')).pid, process.pid);
      await lock.release();
    } finally {
      await cleanup();
    }
  });

  test('a recycled pid (same pid, other start time) is not mistaken for the holder', async () => {
    const { dir, cleanup } = await temporaryFolder();
    try {
      const file = path.join(dir, 'lock');
      const table: ProcessTable = { startTimeOf: async () => 'now' };
      await writeFile(
        file,
        JSON.stringify({
          pid: 4242,
          startTime: 'earlier',
          operation: 'enable',
          version: '1',
          acquiredAt: 'then',
        }),
      );
      const lock = await acquireLock(options(file, { processes: table, waitMs: 1000 }));
      await lock.release();
    } finally {
      await cleanup();
    }
  });

  test('twenty takers at once each hold it alone', async () => {
    const { dir, cleanup } = await temporaryFolder();
    try {
      const file = path.join(dir, 'lock');
      let inside = 0;
      let most = 0;
      await Promise.all(
        Array.from({ length: 20 }, async () => {
          const lock = await acquireLock(options(file, { waitMs: 20_000 }));
          inside++;
          most = Math.max(most, inside);
          await new Promise((resolve) => setTimeout(resolve, 5));
          inside--;
          await lock.release();
        }),
      );
      assert.equal(most, 1);
    } finally {
      await cleanup();
    }
  });
});
