import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, test } from 'node:test';
import { checkManifest } from '../../scripts/package.js';
import { listFolder, readFileIfExists, writeFileAtomic } from '../../src/io/files.js';
import {
  emptyState,
  fileStateStore,
  MAX_APPLIED,
  recordApplied,
} from '../../src/lifecycle/state.js';
import { findHandlerDir } from '../../src/main.js';
import { writeLastResortStatus } from '../../src/protocol/last-resort.js';
import { readStatus } from '../../src/protocol/status.js';
import { temporaryFolder } from '../fakes.js';

describe('atomic files', () => {
  test('a symlink planted where a file goes is replaced, and its target is untouched', async () => {
    const { dir, cleanup } = await temporaryFolder();
    try {
      const target = path.join(dir, 'precious');
      await writeFile(target, 'keep me');
      await symlink(target, path.join(dir, 'state.json'));
      await writeFileAtomic(path.join(dir, 'state.json'), 'new');
      assert.equal(await readFile(target, 'utf8'), 'keep me');
      assert.equal(await readFile(path.join(dir, 'state.json'), 'utf8'), 'new');
      assert.deepEqual((await readdir(dir)).sort(), ['precious', 'state.json']);
    } finally {
      await cleanup();
    }
  });
});

describe('reading small files at once', () => {
  test('a file, a missing file, a folder listing', async () => {
    const { dir, cleanup } = await temporaryFolder();
    try {
      await writeFile(path.join(dir, 'a'), 'text');
      assert.equal((await readFileIfExists(path.join(dir, 'a')))?.toString(), 'text');
      assert.equal(await readFileIfExists(path.join(dir, 'missing')), undefined);
      assert.deepEqual(await listFolder(dir), ['a']);
      assert.deepEqual(await listFolder(path.join(dir, 'missing')), []);
    } finally {
      await cleanup();
    }
  });

  // Claim: a FIFO at a name does not block the process on open (it would stop every timer,
  // the deadline's too): it is read the asynchronous way, and what a writer sends arrives.
  test('a FIFO at the name is read without blocking the process', async () => {
    const { dir, cleanup } = await temporaryFolder();
    try {
      const fifo = path.join(dir, 'fifo');
      const made = spawnSync('mkfifo', [fifo]);
      assert.equal(made.status, 0, String(made.stderr));
      const reading = readFileIfExists(fifo);
      let ticked = false;
      await new Promise((resolve) => setTimeout(resolve, 50)).then(() => {
        ticked = true;
      });
      assert.ok(ticked, 'timers still run while the FIFO waits for a writer');
      const writer = spawn('sh', ['-c', 'printf sent > "$1"', 'sh', fifo]);
      const written = new Promise((resolve) => writer.once('close', resolve));
      assert.equal((await reading)?.toString(), 'sent');
      await written;
    } finally {
      await cleanup();
    }
  });
});

describe('handler state', () => {
  test('a state file that cannot be parsed is kept aside and the handler starts afresh', async () => {
    const { dir, cleanup } = await temporaryFolder();
    try {
      const file = path.join(dir, 'state.json');
      await writeFile(file, '{"schemaVersion": 1, "owner": ');
      const loaded = await fileStateStore(file).load();
      assert.deepEqual(loaded.state, emptyState());
      assert.match(
        loaded.problem ?? '',
        /was unreadable; it was moved to .*state\.json\.unreadable-/,
      );
      const names = await readdir(dir);
      assert.equal(names.length, 1);
      assert.equal(
        await readFile(path.join(dir, names[0] ?? ''), 'utf8'),
        '{"schemaVersion": 1, "owner": ',
      );
    } finally {
      await cleanup();
    }
  });

  test('keys written by a newer version survive a save by an older one', async () => {
    const { dir, cleanup } = await temporaryFolder();
    try {
      const store = fileStateStore(path.join(dir, 'state.json'));
      await writeFile(store.file, JSON.stringify({ ...emptyState(), futureKey: { a: 1 } }));
      const { state } = await store.load();
      await store.save({ ...state, owner: '1.0.0.0' });
      assert.deepEqual(JSON.parse(await readFile(store.file, 'utf8')).futureKey, { a: 1 });
    } finally {
      await cleanup();
    }
  });

  test('only the most recent results are kept', () => {
    let state = emptyState();
    for (let index = 0; index < MAX_APPLIED + 5; index++) {
      state = recordApplied(state, {
        sequenceNumber: index,
        operation: 'enable',
        version: 'v',
        status: 'success',
        at: 't',
      });
    }
    assert.equal(state.applied.length, MAX_APPLIED);
    assert.equal(state.applied.at(-1)?.sequenceNumber, MAX_APPLIED + 4);
  });
});

describe('entry point', () => {
  // Claim (docs/performance.md): a bundle evaluates every module imported statically before its
  // first line, so main.ts and the entries import nothing of the handler statically, and the
  // libraries only some commands need are imported where they are first used.
  test('the entry points load nothing before the verb; undici, node:http and node:child_process load when used', async () => {
    const root = path.join(import.meta.dirname, '..', '..');
    const staticImports = async (file: string) =>
      [
        ...(await readFile(path.join(root, file), 'utf8')).matchAll(
          /^import (?!type )[^;]*? from '([^']+)'(?: with \{[^}]*\})?;$/gms,
        ),
      ].map((match) => match[1]);
    assert.deepEqual(await staticImports('src/main.ts'), ['node:fs', 'node:path', './version.js']);
    for (const entry of ['src/linux/main.ts', 'src/windows/main.ts']) {
      assert.deepEqual(await staticImports(entry), ['../main.js'], entry);
    }
    for (const [file, library] of [
      ['src/io/http.ts', 'undici'],
      ['src/io/imds.ts', 'node:http'],
      ['src/io/processes.ts', 'node:child_process'],
    ]) {
      assert.ok(!(await staticImports(file ?? '')).includes(library ?? ''), `${file}: ${library}`);
    }
    assert.deepEqual(await staticImports('src/version.ts'), ['../package.json']);
  });

  test('the handler folder is found above the shipped executable', async () => {
    const { dir, cleanup } = await temporaryFolder();
    try {
      await mkdir(path.join(dir, 'bin', 'linux-x64'), { recursive: true });
      await writeFile(path.join(dir, 'HandlerManifest.json'), '[]');
      assert.equal(
        findHandlerDir(path.join(dir, 'bin', 'linux-x64', 'aadsshlogin-handler'), () => '/cwd'),
        dir,
      );
      assert.equal(
        findHandlerDir('/usr/bin/node', () => '/cwd'),
        '/cwd',
      );
    } finally {
      await cleanup();
    }
  });

  test('the last-resort status goes where the agent looks, even without HandlerEnvironment.json', async () => {
    const { dir, cleanup } = await temporaryFolder();
    try {
      await writeLastResortStatus({
        handlerDir: dir,
        env: { ConfigSequenceNumber: '4' },
        handlerName: 'H',
        operation: 'enable',
        code: 70,
        message: 'boom',
      });
      const status = (await readStatus(path.join(dir, 'status'), 4))?.[0]?.status;
      assert.equal(status?.status, 'error');
      assert.equal(status?.operation, 'Enable');
      assert.equal(status?.code, 70);
    } finally {
      await cleanup();
    }
  });
});

describe('HandlerManifest.json check', () => {
  const manifest = (commands: Record<string, string>, extra = {}) =>
    JSON.stringify([
      {
        version: 1.0,
        handlerManifest: {
          reportHeartbeat: false,
          continueOnUpdateFailure: false,
          supportsMultipleExtensions: false,
          ...commands,
          ...extra,
        },
      },
    ]);
  const all = (command: string) =>
    Object.fromEntries(
      [
        'installCommand',
        'enableCommand',
        'disableCommand',
        'uninstallCommand',
        'updateCommand',
      ].map((key) => [key, `${command} ${key}`]),
    );

  test('the shipped manifests pass', async () => {
    for (const [type, file] of [
      ['AADSSHLoginForLinux', 'handler/aadsshlogin-handler.sh'],
      ['AADLoginForWindows', 'bin/windows-x64/aadlogin-handler.exe'],
    ] as const) {
      const text = await readFile(
        new URL(`../../manifest/${type}/HandlerManifest.json`, import.meta.url),
        'utf8',
      );
      assert.deepEqual(checkManifest(text, ['HandlerManifest.json', file]), [], type);
    }
  });

  test('a missing command, a command naming no file in the zip, and a string boolean are refused', () => {
    const { updateCommand: _, ...four } = all('handler/x.sh');
    assert.deepEqual(checkManifest(manifest(four), ['handler/x.sh']), ['updateCommand is missing']);
    assert.match(
      checkManifest(manifest(all('handler/y.sh')), ['handler/x.sh']).join(),
      /names handler\/y\.sh, which is not in the zip/,
    );
    assert.match(
      checkManifest(manifest(all('handler/x.sh'), { supportsMultipleExtensions: 'true' }), [
        'handler/x.sh',
      ]).join(),
      /supportsMultipleExtensions must be a JSON boolean/,
    );
  });
});
