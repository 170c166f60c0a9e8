import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, test } from 'node:test';
import { promisify } from 'node:util';
import { createFileLog, formatLine, redact } from '../../src/io/log.js';
import { temporaryFolder } from '../fakes.js';

const execFileAsync = promisify(execFile);
const context = { operation: 'enable', sequenceNumber: 3, version: '1.0.0.0' };

describe('log', () => {
  test('one line per event with time, level, operation, sequence number and version', () => {
    const line = formatLine(new Date('2026-12-02T10:00:00Z'), 'info', context, 'Enable started', {
      deadlineSeconds: 270,
      file: '/a b',
    });
    assert.equal(
      line,
      `2026-12-02T10:00:00.000Z INFO  [enable seq=3 v=1.0.0.0 pid=${process.pid}] Enable started deadlineSeconds=270 file="/a b"`,
    );
    assert.doesNotMatch(formatLine(new Date(), 'error', context, 'two\nlines'), /\n/);
  });

  test('registered secrets and token-shaped values never reach the text', () => {
    const text = redact(
      'pw=hunter22 token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjM0NTYifQ.c2lnbmF0dXJl {"access_token": "abc.def"} Bearer xyz123',
      ['hunter22'],
    );
    assert.doesNotMatch(text, /hunter22|eyJhbGci|abc\.def|xyz123/);
    assert.match(text, /"access_token": "\[REDACTED\]"/);
  });

  test('writes redacted lines to the file and rotates by size, keeping a bounded number of files', async () => {
    const { dir, cleanup } = await temporaryFolder();
    try {
      const log = createFileLog({
        folder: dir,
        fileName: 'handler.log',
        context,
        maxBytes: 2000,
        maxFiles: 3,
      });
      log.addSecret('s3cr3t-value');
      log.info('the password is s3cr3t-value');
      for (let index = 0; index < 200; index++) log.info(`event ${index} ${'x'.repeat(50)}`);
      await log.close();
      const files = await readdir(dir);
      assert.ok(files.length <= 3, `files: ${files.join(', ')}`);
      let total = '';
      for (const file of files) total += await readFile(path.join(dir, file), 'utf8');
      assert.doesNotMatch(total, /s3cr3t-value/);
      assert.match(total, /event 199/);
    } finally {
      await cleanup();
    }
  });

  test('a log folder that cannot be created is reported once and never throws', async () => {
    const { dir, cleanup } = await temporaryFolder();
    const problems: string[] = [];
    await writeFile(path.join(dir, 'a-file'), '');
    const log = createFileLog({
      folder: path.join(dir, 'a-file', 'logs'),
      fileName: 'handler.log',
      context,
      onProblem: (problem) => problems.push(problem),
    });
    log.info('dropped');
    log.error('dropped too');
    await log.close();
    await cleanup();
    assert.equal(problems.length, 1);
    assert.match(
      problems[0] ?? '',
      /^The handler log folder .*a-file\/logs cannot be created: ENOTDIR.* The command goes on without its log\.$/,
    );
  });

  for (const [what, plant, named] of [
    ['a folder', (file: string) => mkdir(file), /a folder is in its place/],
    [
      'a FIFO nobody reads (opening it for writing would wait forever)',
      (file: string) => execFileAsync('mkfifo', [file]),
      /a FIFO is in its place/,
    ],
  ] as const) {
    test(`${what} where the log file goes: reported once, the command goes on`, async () => {
      const { dir, cleanup } = await temporaryFolder();
      try {
        const file = path.join(dir, 'handler.log');
        await plant(file);
        const problems: string[] = [];
        const log = createFileLog({
          folder: dir,
          fileName: 'handler.log',
          context,
          onProblem: (problem) => problems.push(problem),
        });
        log.info('dropped');
        log.warn('dropped too');
        await log.close();
        assert.equal(problems.length, 1, problems.join('\n'));
        assert.match(problems[0] ?? '', new RegExp(`^The handler log ${file} cannot be written: `));
        assert.match(problems[0] ?? '', named);
        assert.match(problems[0] ?? '', /move it away so that the handler can log again/);
      } finally {
        await cleanup();
      }
    });
  }
});
