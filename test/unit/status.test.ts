import assert from 'node:assert/strict';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, test } from 'node:test';
import {
  agentStatusFileSchema,
  MAX_MESSAGE_CHARS,
  MAX_STATUS_FILE_BYTES,
  readStatus,
  renderStatus,
  writeStatus,
} from '../../src/protocol/status.js';
import { temporaryFolder } from '../fakes.js';

const NAME = 'Microsoft.Azure.ActiveDirectory.AADSSHLoginForLinux';
const now = new Date('2026-12-02T10:00:00.123Z');

describe('status file', () => {
  test('is an array of one object the agent accepts, with the code and message', () => {
    const text = renderStatus(
      { operation: 'Enable', status: 'error', code: 22, message: 'No identity.' },
      NAME,
      now,
    );
    const parsed = agentStatusFileSchema.parse(JSON.parse(text));
    assert.equal(parsed.length, 1);
    assert.equal(parsed[0]?.status.status, 'error');
    assert.equal(parsed[0]?.status.code, 22);
    assert.deepEqual(parsed[0]?.status.formattedMessage, {
      lang: 'en-US',
      message: 'No identity.',
    });
    assert.equal(JSON.parse(text)[0].timestampUTC, '2026-12-02T10:00:00Z');
  });

  test('a long message is cut to the 1 KiB the agent shows', () => {
    const text = renderStatus(
      { operation: 'Enable', status: 'error', code: 70, message: 'x'.repeat(5000) },
      NAME,
      now,
    );
    const message = JSON.parse(text)[0].status.formattedMessage.message as string;
    assert.ok(message.length <= MAX_MESSAGE_CHARS);
    assert.match(message, /\[truncated\]$/);
  });

  test('substatus entries are dropped from the end to stay under 128 KiB', () => {
    const substatus = Array.from({ length: 400 }, (_, index) => ({
      name: `check ${index}`,
      status: 'success' as const,
      code: 0,
      message: 'y'.repeat(1000),
    }));
    const text = renderStatus(
      { operation: 'Install', status: 'success', code: 0, message: 'ok', substatus },
      NAME,
      now,
    );
    assert.ok(Buffer.byteLength(text) <= MAX_STATUS_FILE_BYTES);
    const kept = JSON.parse(text)[0].status.substatus as unknown[];
    assert.ok(kept.length > 50 && kept.length < 400);
  });

  test('is replaced atomically, leaving no temporary file behind', async () => {
    const { dir, cleanup } = await temporaryFolder();
    try {
      await writeStatus(
        dir,
        3,
        { operation: 'Enable', status: 'transitioning', code: 0, message: 'a' },
        { handlerName: NAME, now },
      );
      await writeStatus(
        dir,
        3,
        { operation: 'Enable', status: 'success', code: 0, message: 'b' },
        { handlerName: NAME, now },
      );
      assert.deepEqual(await readdir(dir), ['3.status']);
      assert.equal((await readStatus(dir, 3))?.[0]?.status.status, 'success');
    } finally {
      await cleanup();
    }
  });

  test('transitioning never replaces a terminal status for the same sequence number', async () => {
    const { dir, cleanup } = await temporaryFolder();
    try {
      await writeStatus(
        dir,
        1,
        { operation: 'Enable', status: 'success', code: 0, message: 'done' },
        { handlerName: NAME, now },
      );
      const wrote = await writeStatus(
        dir,
        1,
        { operation: 'Enable', status: 'transitioning', code: 0, message: 'again' },
        { handlerName: NAME, now },
      );
      assert.equal(wrote, false);
      assert.equal((await readStatus(dir, 1))?.[0]?.status.formattedMessage?.message, 'done');
      await writeStatus(
        dir,
        1,
        { operation: 'Enable', status: 'error', code: 22, message: 'now failed' },
        { handlerName: NAME, now },
      );
      assert.equal((await readStatus(dir, 1))?.[0]?.status.code, 22);
    } finally {
      await cleanup();
    }
  });

  test('a corrupt status file for the sequence number is replaced by transitioning', async () => {
    const { dir, cleanup } = await temporaryFolder();
    try {
      await writeFile(path.join(dir, '2.status'), '[{"status": {"status": "succ');
      await writeStatus(
        dir,
        2,
        { operation: 'Enable', status: 'transitioning', code: 0, message: 'x' },
        { handlerName: NAME, now },
      );
      assert.equal(
        JSON.parse(await readFile(path.join(dir, '2.status'), 'utf8'))[0].status.status,
        'transitioning',
      );
    } finally {
      await cleanup();
    }
  });

  test('the agent rules refuse an object at the top level and an unknown substatus value', () => {
    assert.equal(agentStatusFileSchema.safeParse({ status: { status: 'success' } }).success, false);
    assert.equal(
      agentStatusFileSchema.safeParse([
        { status: { status: 'success', substatus: [{ status: 'fine' }] } },
      ]).success,
      false,
    );
    assert.equal(
      agentStatusFileSchema.safeParse([{ status: { status: 'success', substatus: [null] } }])
        .success,
      true,
    );
  });
});
