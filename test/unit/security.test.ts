import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { lstat, mkdir, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import fc from 'fast-check';
import { HandlerFailure } from '../../src/failures.js';
import { writeFileAtomic } from '../../src/io/files.js';
import { type ImdsAnswer, ImdsUnreachable } from '../../src/io/imds.js';
import { createFileLog } from '../../src/io/log.js';
import { systemProcesses } from '../../src/io/processes.js';
import type { Extension, OperationContext, Outcome } from '../../src/lifecycle/extension.js';
import { runCommand, stateFolder } from '../../src/lifecycle/pipeline.js';
import { emptyState, fileStateStore } from '../../src/lifecycle/state.js';
import { type LinuxSystem, runChecks } from '../../src/linux/checks/index.js';
import { parseOsRelease } from '../../src/linux/checks/os-release.js';
import { supportVerdict } from '../../src/linux/checks/support-matrix.js';
import { aadSshLoginForLinux } from '../../src/linux/extension.js';
import { armor, publicKeys, trustedKeys } from '../../src/linux/keys.js';
import { realMachine } from '../../src/linux/machine.js';
import { azureMetadataService } from '../../src/linux/metadata-service.js';
import { planInstall } from '../../src/linux/plan.js';
import { KEY_FILE, MICROSOFT_KEY_FINGERPRINTS } from '../../src/linux/repository.js';
import { type LinuxSettings, parseLinuxSettings } from '../../src/linux/settings.js';
import { acquireLock } from '../../src/protocol/lock.js';
import { writeStatus } from '../../src/protocol/status.js';
import { fakeClock, fakeProcesses, withTemporaryFolder } from '../fakes.js';
import {
  HANDLER_NAME,
  handlerLayout,
  keyMaterial,
  runs,
  settingsFile,
  syntheticKey,
} from './bad-input-world.js';

/**
 * The security claims of project issue 7, each with its test: settings are validated before use;
 * no command goes through a shell; the files we write get explicit modes, are replaced
 * atomically and never written through a planted symlink; no secret reaches a log, status, event
 * or error message; only keys with trusted fingerprints are installed (the installer's side is in
 * installer.test.ts, "only trusted keys").
 */

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const run = promisify(execFile);

// ---------------------------------------------------------------------------------------------
// Settings are validated before use
// ---------------------------------------------------------------------------------------------

const corpus = JSON.parse(
  await readFile(new URL('../fixtures/os-release/corpus.json', import.meta.url), 'utf8'),
) as { file: string; supported: boolean }[];
const supported = await Promise.all(
  corpus
    .filter((entry) => entry.supported)
    .map(async (entry) =>
      parseOsRelease(
        await readFile(new URL(`../fixtures/os-release/${entry.file}`, import.meta.url), 'utf8'),
      ),
    ),
);

/** Characters that end or break a line, quote, escape or hide: what a mirror URL must not hold. */
const DANGEROUS = [
  '\n',
  '\r',
  '\t',
  ' ',
  '\v',
  '\f',
  '\0',
  '\x1b',
  '\x7f',
  '\x85',
  '\u2028',
  '\u2029',
  '\u00a0',
  '"',
  "'",
  '`',
  '\\',
];

const urlLike = fc.oneof(
  fc.webUrl({ withQueryParameters: true, withFragments: true }),
  fc
    .tuple(
      fc.webUrl(),
      fc.nat(),
      fc.oneof(fc.constantFrom(...DANGEROUS), fc.string({ unit: 'binary', maxLength: 3 })),
    )
    .map(([url, at, inserted]) => {
      const index = 8 + (at % Math.max(url.length - 7, 1));
      return url.slice(0, index) + inserted + url.slice(index);
    }),
  fc.string({ unit: 'binary', maxLength: 30 }).map((rest) => `https://${rest}`),
  fc.constantFrom(
    'ftp://mirror',
    'file:///etc',
    'https://',
    'https://[',
    'http://a:b',
    'http://%zz',
  ),
);

/** The repository file planned for each supported distribution with `baseUrl`, by line. */
function repositoryLines(settings: LinuxSettings) {
  return supported.map((os) => {
    const plan = planInstall(os, 'x86_64', settings, new Map());
    assert.ok(plan, os.id);
    return plan.repository.alternatives.map((alternative) => alternative.content.split('\n'));
  });
}
const defaultLines = repositoryLines({ repository: { baseUrl: undefined, keyFingerprints: [] } });

describe('settings are validated before use', () => {
  // Claim: a repository.baseUrl is accepted only if it is an http(s) URL that parses, with no
  // whitespace, control character, quote or backslash; then every repository file planned
  // with it has exactly the lines it has with packages.microsoft.com, each with the same key.
  // Anything else is refused with 53 naming repository.baseUrl.
  test('a mirror URL is a plain http(s) URL, or it is refused naming the key', () => {
    fc.assert(
      fc.property(urlLike, (baseUrl) => {
        let settings: LinuxSettings;
        try {
          settings = parseLinuxSettings({ repository: { baseUrl } }).settings;
        } catch (error) {
          assert.ok(error instanceof HandlerFailure, String(error));
          assert.equal(error.code, 53);
          assert.match(error.detail, /^Public setting "repository\.baseUrl" is invalid: /);
          return;
        }
        const accepted = settings.repository.baseUrl ?? '';
        assert.doesNotMatch(accepted, /[\s"'`\\\p{Cc}]/u, JSON.stringify(accepted));
        assert.ok(URL.canParse(accepted), `${JSON.stringify(accepted)} does not parse`);
        assert.match(new URL(accepted).protocol, /^https?:$/);
        const lines = repositoryLines(settings);
        lines.forEach((files, index) => {
          files.forEach((file, alternative) => {
            const expected = defaultLines[index]?.[alternative] ?? [];
            assert.equal(file.length, expected.length, file.join('\n'));
            file.forEach((line, number) => {
              const key = (text: string | undefined) =>
                /^(#|\[|deb |[a-z_]+=)/.exec(text ?? '')?.[0];
              assert.equal(key(line), key(expected[number]), line);
            });
          });
        });
      }),
      runs(500),
    );
  });

  // Regressions found by the property above (and the reasons for the fix in settings.ts).
  for (const baseUrl of [
    'https://mirror.example\u0000',
    'https://mirror.example/\x1b[2J',
    'https://mirror.example/\x7f',
    'https://mirror.example/\x85x',
    'https://[',
    'http://mirror.example:port/',
  ]) {
    const shown = baseUrl.replace(
      /[^\x20-\x7e]/g,
      (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
    );
    test(`repository.baseUrl "${shown}" is refused with 53`, () => {
      assert.throws(
        () => parseLinuxSettings({ repository: { baseUrl } }),
        (error) => error instanceof HandlerFailure && error.code === 53,
      );
    });
  }

  // Claim: a fingerprint is accepted exactly when it is 40 hexadecimal digits once whitespace is
  // removed, and is then kept as 40 upper-case digits; anything else is refused naming its index.
  test('fingerprints are 40 hexadecimal digits, or refused naming the entry', () => {
    const hexDigit = fc.constantFrom(...'0123456789abcdefABCDEF');
    const fingerprint = fc.oneof(
      fc.string({ unit: hexDigit, minLength: 40, maxLength: 40 }),
      fc
        .string({ unit: hexDigit, minLength: 40, maxLength: 40 })
        .map((digits) => digits.replace(/(.{4})/g, '$1 ').trim()),
      fc.string({ unit: hexDigit, minLength: 0, maxLength: 60 }),
      fc.string({
        unit: fc.oneof(hexDigit, fc.constantFrom(' ', 'g', 'x', '\n', '-')),
        maxLength: 50,
      }),
      fc.jsonValue(),
    );
    fc.assert(
      fc.property(fc.array(fingerprint, { maxLength: 4 }), (keyFingerprints) => {
        const valid = (value: unknown) =>
          typeof value === 'string' && /^[0-9A-Fa-f]{40}$/.test(value.replace(/\s+/g, ''));
        try {
          const { settings } = parseLinuxSettings({ repository: { keyFingerprints } });
          assert.ok(keyFingerprints.every(valid));
          assert.deepEqual(
            settings.repository.keyFingerprints,
            keyFingerprints.map((value) => String(value).replace(/\s+/g, '').toUpperCase()),
          );
        } catch (error) {
          assert.ok(error instanceof HandlerFailure, String(error));
          assert.equal(error.code, 53);
          const first = keyFingerprints.findIndex((value) => !valid(value));
          assert.ok(first >= 0);
          assert.match(error.detail, new RegExp(`"repository\\.keyFingerprints\\.${first}"`));
        }
      }),
      runs(500),
    );
  });

  // Claim: the settings are validated before anything runs: a command with an invalid setting
  // fails with 53 before the extension's work starts, and writes no state.
  test('an invalid setting stops install and enable before any work', async () => {
    for (const verb of ['install', 'enable'] as const) {
      const layout = await handlerLayout();
      try {
        await layout.writeSettings(0, settingsFile({ repository: { baseUrl: 'https://m\n[x]' } }));
        let worked = false;
        const extension: Extension<LinuxSettings> = {
          ...aadSshLoginForLinux,
          run: {
            ...aadSshLoginForLinux.run,
            [verb]: async () => {
              worked = true;
              return { status: 'success', message: 'worked' };
            },
          },
        };
        const result = await runCommand(verb, {
          extension,
          version: '1.0.0.0',
          handlerDir: layout.handlerDir,
          env: { ConfigSequenceNumber: '0' },
          clock: fakeClock(),
          processes: fakeProcesses(() => ({ exitCode: 127 })),
          createLog: () =>
            createFileLog({
              folder: layout.log,
              fileName: 'h.log',
              context: { operation: verb, sequenceNumber: 0, version: '1' },
            }),
        });
        assert.equal(result.exitCode, 53);
        assert.match(result.message, /"repository\.baseUrl"/);
        assert.equal(worked, false);
        const state = JSON.parse(
          await readFile(
            path.join(stateFolder(layout.handlerDir, HANDLER_NAME), 'state.json'),
            'utf8',
          ).catch(() => 'null'),
        );
        assert.equal(state, null, 'no state was written');
      } finally {
        await layout.cleanup();
      }
    }
  });
});

// ---------------------------------------------------------------------------------------------
// No command is ever run through a shell
// ---------------------------------------------------------------------------------------------

async function sources(folder: string): Promise<{ file: string; text: string }[]> {
  const names = (await readdir(folder, { recursive: true })) as string[];
  return Promise.all(
    names
      .filter((name) => name.endsWith('.ts'))
      .sort()
      .map(async (name) => ({
        file: path.join(path.basename(folder), name),
        text: await readFile(path.join(folder, name), 'utf8'),
      })),
  );
}

/**
 * What a source file must not do to start a program: the rule `npm run lint` cannot express,
 * applied to every file of src/ (comments removed first). Only src/io/processes.ts may reach
 * child_process or execa.
 */
function shellProblems(file: string, text: string): string[] {
  const code = text.replace(/\/\*[\s\S]*?\*\/|(^|\s)\/\/.*$/gm, '$1');
  const problems: string[] = [];
  const forbid = (pattern: RegExp, what: string) => {
    if (pattern.test(code)) problems.push(`${file}: ${what}`);
  };
  forbid(/\bshell\s*:/, 'a shell option');
  forbid(
    /\b(execSync|execFileSync|spawnSync|execaCommand|execaCommandSync|execaSync|execaNode)\b/,
    'a command-line or synchronous process API',
  );
  // `exec(` as a function (child_process.exec), not RegExp's `.exec(`.
  forbid(/(?<![.\w])exec\s*\(/, 'exec()');
  // execa's shell-like template literal: $`…` or $({…})`…`.
  forbid(/(?:^|[\s=(,;:!&|?])\$(\([^)]*\))?\s*`/m, "execa's template-literal $");
  forbid(/\bBun\s*\.\s*(spawn|spawnSync|\$)/, "Bun's spawn or shell");
  forbid(/from\s+['"]bun['"]/, 'an import from bun');
  forbid(/\.run\(\s*(['"`])[^'"`]*\s[^'"`]*\1/, 'a program named by a string with a space');
  if (file !== path.join('src', 'io', 'processes.ts')) {
    forbid(/['"](node:)?child_process['"]/, 'child_process outside io/processes.ts');
    forbid(/['"]execa['"]/, 'execa outside io/processes.ts');
  }
  return problems;
}

describe('no command is ever run through a shell', () => {
  // Claim: the rule sees what it forbids, and not what merely looks like it.
  test('the source rule flags shells and command lines, not regular expressions', () => {
    for (const bad of [
      "execa('apt-get', ['update'], { shell: true })",
      "import { exec } from 'node:child_process';",
      "const cp = await import('child_process');",
      'exec(`apt-get install aadsshlogin`)',
      "execSync('rpm -q aadlogin')",
      'await $`dpkg --purge aadsshlogin`',
      'await $({ env })`zypper -n install aadsshlogin`',
      "Bun.spawn(['sh', '-c', line])",
      'await Bun.$`rpm -e aadsshlogin`',
      "processes.run('apt-get update', [])",
    ]) {
      assert.ok(shellProblems(path.join('src', 'x.ts'), bad).length > 0, bad);
    }
    for (const good of [
      'const match = /^MemTotal:\\s+(\\d+)/.exec(text);',
      "value.replace(/\\\\([\\\\\"$`])/g, '$1')",
      "processes.run('dpkg-query', ['-W', name])",
      '// exec("no") in a comment; shell: true in a comment',
      "const url = 'https://packages.microsoft.com'; const x = 1;",
    ]) {
      assert.deepEqual(shellProblems(path.join('src', 'x.ts'), good), [], good);
    }
  });

  // Claim: only src/io/processes.ts starts programs, with spawn(file, args) or Bun's spawn([file,
  // ...args]) — never a shell — and
  // no source file has a `shell` option, exec/execSync, execaCommand, execa's $`…`, Bun's spawn
  // or shell, or runs a program named by a string with a space.
  test('the sources start programs only through processes.ts, with argument arrays', async () => {
    const files = await sources(path.join(ROOT, 'src'));
    assert.ok(files.length > 30, `${files.length} source files`);
    const problems = files.flatMap(({ file, text }) => shellProblems(file, text));
    const processes = files.find((entry) => entry.file === path.join('src', 'io', 'processes.ts'));
    assert.ok(processes);
    // Two starts, one per runtime (Bun's own, and node:child_process under Node.js), each with
    // the program and its arguments as an array; the bare `spawn(` is the declaration of Bun's API.
    const calls = processes.text.match(/[\w.]*\bspawn\s*\([^)\n]*/g) ?? [];
    assert.deepEqual(calls.sort(), [
      'bun.spawn([file, ...args], {',
      'spawn(',
      'spawn(file, args, {',
    ]);
    assert.deepEqual(problems, []);
  });

  // Claim: shell syntax in a program's name or arguments reaches the program as it is: nothing
  // expands `$(…)`, backquotes, `;`, `|` or globs, and a "program" with shell syntax does not run.
  test('shell syntax is passed to programs as plain text', async () => {
    await withTemporaryFolder(async (dir) => {
      const marker = path.join(dir, 'pwned');
      const evil = [
        `$(touch ${marker})`,
        `\`touch ${marker}\``,
        `; touch ${marker}`,
        `| touch ${marker}`,
        '*',
        '~',
        '$HOME',
      ];
      const printed = await systemProcesses.run('printf', ['%s\\n', ...evil]);
      assert.equal(printed.exitCode, 0);
      assert.equal(printed.stdout, evil.map((arg) => `${arg}\n`).join(''));
      const started = await systemProcesses.run(`true; touch ${marker}`, []);
      assert.equal(started.exitCode, 127);
      await assert.rejects(stat(marker), /ENOENT/);
    });
  });
});

// ---------------------------------------------------------------------------------------------
// Files we write: explicit modes, atomic replacement, never through a planted symlink
// ---------------------------------------------------------------------------------------------

async function modeOf(file: string): Promise<number> {
  return (await stat(file)).mode & 0o7777;
}

/** Every writer of the handler, writing `file` (status, state, lock, repository and key files). */
const WRITERS: {
  name: string;
  /** The file's name in its folder, and how it is written there. */
  fileName: string;
  mode: number;
  write(folder: string): Promise<void>;
  /** What the file holds afterwards (a regular file of ours). */
  holds: RegExp;
}[] = [
  {
    name: 'the status file',
    fileName: '0.status',
    mode: 0o644,
    write: async (folder) => {
      await writeStatus(
        folder,
        0,
        { operation: 'Enable', status: 'success', code: 0, message: 'ok' },
        { handlerName: 'H', now: new Date() },
      );
    },
    holds: /"status":"success"/,
  },
  {
    name: 'the handler state',
    fileName: 'state.json',
    mode: 0o600,
    write: (folder) => fileStateStore(path.join(folder, 'state.json')).save(emptyState()),
    holds: /"schemaVersion": 1/,
  },
  {
    name: 'a repository file (realMachine)',
    fileName: 'microsoft-prod.list',
    mode: 0o644,
    write: (folder) =>
      realMachine(
        fakeProcesses(() => ({})),
        fakeClock(),
      ).writeFile(
        path.join(folder, 'microsoft-prod.list'),
        'deb [signed-by=/k] https://m x main\n',
        0o644,
      ),
    holds: /^deb /,
  },
  {
    name: 'a keyring (realMachine)',
    fileName: 'aadsshlogin-microsoft-prod.gpg',
    mode: 0o644,
    write: (folder) =>
      realMachine(
        fakeProcesses(() => ({})),
        fakeClock(),
      ).writeFile(
        path.join(folder, 'aadsshlogin-microsoft-prod.gpg'),
        Buffer.from([0x99, 1, 2, 3]),
        0o644,
      ),
    holds: /^\x99/,
  },
];

describe('files we write', () => {
  // Claim: each file gets exactly its mode (status, repository and key files 0644 so that
  // apt's unprivileged _apt user can read the keyring; state 0600), whatever umask the agent
  // runs the handler with.
  test('modes are exact even under a restrictive umask', async () => {
    await withTemporaryFolder(async (dir) => {
      const script = `
        import { writeFileAtomic } from './src/io/files.ts';
        process.umask(0o077);
        for (const mode of [0o644, 0o600, 0o640]) {
          await writeFileAtomic(${JSON.stringify(dir)} + '/file-' + mode.toString(8), 'x', mode);
        }`;
      await run(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
        cwd: ROOT,
      });
      for (const mode of [0o644, 0o600, 0o640]) {
        assert.equal(
          (await modeOf(path.join(dir, `file-${mode.toString(8)}`))).toString(8),
          mode.toString(8),
        );
      }
    });
  });

  for (const writer of WRITERS) {
    // Claim: a symlink planted where the file goes (to a file we must not touch, or to a file that
    // does not exist yet) is replaced by our regular file, with its mode; the link's target is
    // neither changed nor created.
    test(`${writer.name}: a planted symlink is replaced, never followed`, async () => {
      await withTemporaryFolder(async (dir) => {
        const folder = path.join(dir, 'folder');
        await mkdir(folder);
        const precious = path.join(dir, 'precious');
        await writeFile(precious, 'keep me', { mode: 0o600 });
        for (const target of [precious, path.join(dir, 'created-by-attacker')]) {
          const file = path.join(folder, writer.fileName);
          await symlink(target, file).catch(async () => {
            await rm(file);
            await symlink(target, file);
          });
          await writer.write(folder);
          assert.ok((await lstat(file)).isFile(), 'a regular file now');
          assert.match(await readFile(file, 'latin1'), writer.holds);
          assert.equal(await modeOf(file), writer.mode);
          assert.equal(await readFile(precious, 'utf8'), 'keep me');
          await assert.rejects(stat(path.join(dir, 'created-by-attacker')), /ENOENT/);
        }
        assert.deepEqual(
          (await readdir(folder)).filter((name) => name.endsWith('.tmp')),
          [],
          'no temporary file left',
        );
      });
    });
  }

  // Claim: the lock file is created with O_EXCL|O_NOFOLLOW (0600); a symlink planted in its
  // place is taken for a stale lock and removed, never written through.
  test('the lock: a planted symlink is removed, never written through', async () => {
    await withTemporaryFolder(async (dir) => {
      const precious = path.join(dir, 'precious');
      await writeFile(precious, 'keep me');
      const file = path.join(dir, 'state', 'lock');
      await mkdir(path.dirname(file));
      await symlink(precious, file);
      const lock = await acquireLock({
        file,
        operation: 'enable',
        version: '1.0.0.0',
        clock: fakeClock(new Date(Date.now() + 60_000)),
        waitMs: 60_000,
      });
      assert.ok((await lstat(file)).isFile());
      assert.equal(await modeOf(file), 0o600);
      assert.equal(await readFile(precious, 'utf8'), 'keep me');
      await lock.release();
    });
  });

  // Claim: the log is appended to, never through a symlink planted at its name or a rotated
  // name: the link's target is neither changed nor created, and the log never fails a command.
  test('the log: never appended through a planted symlink', async () => {
    await withTemporaryFolder(async (dir) => {
      const folder = path.join(dir, 'log');
      await mkdir(folder);
      const precious = path.join(dir, 'precious');
      await writeFile(precious, 'keep me');
      const context = { operation: 'enable', sequenceNumber: 0, version: '1' };
      for (const target of [precious, path.join(dir, 'created-by-attacker')]) {
        const file = path.join(folder, 'handler.log');
        await rm(file, { force: true });
        await symlink(target, file);
        const problems: string[] = [];
        const log = createFileLog({
          folder,
          fileName: 'handler.log',
          context,
          onProblem: (problem) => problems.push(problem),
        });
        log.info('an event');
        await log.close();
        assert.equal(await readFile(precious, 'utf8'), 'keep me');
        await assert.rejects(stat(path.join(dir, 'created-by-attacker')), /ENOENT/);
      }
      // A fresh log file is created with its mode (less the umask, never more).
      const fresh = path.join(dir, 'fresh');
      const log = createFileLog({ folder: fresh, fileName: 'handler.log', context });
      log.info('an event');
      await log.close();
      assert.equal((await modeOf(path.join(fresh, 'handler.log'))) & ~0o644, 0);
    });
  });

  // Claim: a reader never sees a file half-written: while any sequence of contents replaces a
  // file, every read gives one of the contents in full; and no temporary file is left behind.
  test('replacement is atomic: readers see the old or the new content, never a mix', async () => {
    await withTemporaryFolder(async (dir) => {
      const file = path.join(dir, 'status.json');
      await fc.assert(
        fc.asyncProperty(
          fc.array(
            fc.tuple(fc.integer({ min: 1, max: 2_000_000 }), fc.integer({ min: 0, max: 255 })),
            {
              minLength: 1,
              maxLength: 4,
            },
          ),
          async (contents) => {
            const written = contents.map(([size, byte]) => Buffer.alloc(size, byte));
            await writeFileAtomic(file, Buffer.from('initial'));
            const allowed = [Buffer.from('initial'), ...written];
            for (const content of written) {
              let done = false;
              const writing = writeFileAtomic(file, content).finally(() => {
                done = true;
              });
              while (!done) {
                const seen = await readFile(file);
                assert.ok(
                  allowed.some((candidate) => candidate.equals(seen)),
                  `a read saw ${seen.length} bytes that were never written whole`,
                );
              }
              await writing;
            }
            assert.deepEqual(
              (await readdir(dir)).filter((name) => name !== 'status.json'),
              [],
            );
          },
        ),
        runs(20),
      );
    });
  });

  // Claim: a replacement that fails (the target became a folder) leaves the old content and no
  // temporary file, and says why.
  test('a replacement that fails leaves nothing behind', async () => {
    await withTemporaryFolder(async (dir) => {
      const file = path.join(dir, 'state.json');
      await mkdir(file);
      await assert.rejects(writeFileAtomic(file, 'new'), /EISDIR|ENOTEMPTY|EEXIST/);
      assert.deepEqual(await readdir(dir), ['state.json']);
    });
  });
});

// ---------------------------------------------------------------------------------------------
// No secret in any log, status, event or error message
// ---------------------------------------------------------------------------------------------

const TOKEN_JWT =
  'eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJNT0NLVE9LRU4ifQ.MOCKTOKENsignature';

/** Every file under `folder`, with its text. */
async function everyFile(folder: string): Promise<{ file: string; text: string }[]> {
  const names = (await readdir(folder, { recursive: true }).catch(() => [])) as string[];
  const files: { file: string; text: string }[] = [];
  for (const name of names) {
    const file = path.join(folder, name);
    if ((await lstat(file)).isFile()) files.push({ file, text: await readFile(file, 'utf8') });
  }
  return files;
}

/** The forms in which a secret could be read back from a text file or a message. */
function forms(secret: string): string[] {
  return [
    secret,
    JSON.stringify(secret).slice(1, -1),
    secret.replace(/\r?\n/g, '\\n'),
    JSON.stringify(JSON.stringify(secret)).slice(3, -3),
  ].filter((form) => form.length >= 4);
}

describe('no secret in any log, status, event or error message', () => {
  // Claim: after commands that decrypted protected settings and were given an IMDS token, none
  // of the decrypted values (any text: quotes, backslashes, newlines, Unicode) nor the token
  // appears, raw or escaped, in the log files, status files, events, the handler state, the
  // command's output or its warnings, even when the work logs them, fails with them in the
  // message, or reports them in its status.
  test('decrypted values and tokens appear nowhere, raw or escaped', async () => {
    const secretText = fc
      .tuple(
        fc.string({
          unit: fc.constantFrom(...'ABCDEFGHJKLMNPQRSTUVWXYZ23456789'),
          minLength: 8,
          maxLength: 8,
        }),
        fc.string({ unit: 'binary', maxLength: 16 }),
        fc.constantFrom('', '"', '\\', '\n', '\r\n', '\t', "'", '=', ' '),
      )
      .map(([unique, rest, special]) => `${unique}${special}${rest}`);
    await fc.assert(
      fc.asyncProperty(
        fc.array(secretText, { minLength: 1, maxLength: 3 }),
        // The commands that read (and so decrypt) the protected settings.
        fc.constantFrom<'install' | 'enable'>('install', 'enable'),
        fc.constantFrom('log', 'fail-handler', 'fail-error', 'report', 'imds'),
        async (secrets, verb, how) => {
          const layout = await handlerLayout();
          try {
            const thumbprint = 'F'.repeat(40);
            await writeFile(path.join(layout.lib, `${thumbprint}.crt`), 'c');
            await writeFile(path.join(layout.lib, `${thumbprint}.prv`), 'k');
            await layout.writeSettings(0, settingsFile({}, 'MIIBencrypted', thumbprint));
            const decrypted = JSON.stringify({
              password: secrets[0],
              nested: { list: secrets.slice(1) },
            });
            const all = [...secrets, TOKEN_JWT];
            const work = async (context: OperationContext<LinuxSettings>): Promise<Outcome> => {
              const leak = all.join(' and ');
              switch (how) {
                case 'log':
                  context.log.info(`working with ${leak}`, { value: secrets[0], other: leak });
                  context.log.warn(`"${secrets[0]}"`);
                  return { status: 'success', message: 'done.' };
                case 'fail-handler':
                  throw new HandlerFailure('repositoryUnavailable', `the mirror said ${leak}`);
                case 'fail-error':
                  throw new Error(`a tool printed ${leak}\n    at secret (/x.ts:1:1)`);
                case 'report':
                  return {
                    status: 'warning',
                    message: `done with ${leak}`,
                    substatus: [{ name: 'Step', status: 'warning', code: 0, message: leak }],
                  };
                default: {
                  // The real identity check, given the token by IMDS.
                  const system = {
                    readText: async (file: string) =>
                      file === '/proc/meminfo'
                        ? 'MemTotal: 2000000 kB\n'
                        : 'ID=debian\nVERSION_ID="12"\n',
                    listDirectory: async () => [],
                    processes: fakeProcesses(() => ({ exitCode: 1 })),
                    clock: context.clock,
                    architecture: 'x86_64',
                    agentFolders: [],
                    metadata: azureMetadataService({
                      get: async (query: string): Promise<ImdsAnswer> => {
                        if (query.includes('azEnvironment'))
                          return { status: 200, body: TOKEN_JWT, retryAfterMs: undefined };
                        return {
                          status: 200,
                          body: JSON.stringify({
                            access_token: TOKEN_JWT,
                            refresh_token: secrets[0],
                          }),
                          retryAfterMs: undefined,
                        };
                      },
                    }),
                  } satisfies LinuxSystem;
                  const checks = await runChecks(system, { log: context.log, identity: true });
                  return { status: 'success', message: 'checked.', substatus: checks.steps };
                }
              }
            };
            const extension: Extension<LinuxSettings> = {
              ...aadSshLoginForLinux,
              run: { ...aadSshLoginForLinux.run, install: work, enable: work, update: work },
            };
            const warnings: string[] = [];
            const result = await runCommand(verb, {
              extension,
              version: '1.0.0.0',
              handlerDir: layout.handlerDir,
              env: { ConfigSequenceNumber: '0' },
              clock: fakeClock(),
              processes: fakeProcesses(() => ({ stdout: decrypted })),
              createLog: (options) =>
                createFileLog({ ...options, onProblem: (p) => warnings.push(p) }),
              warn: (message) => warnings.push(message),
            });
            const places = [
              ...(await everyFile(layout.log)),
              ...(await everyFile(layout.status)),
              ...(await everyFile(layout.events)),
              ...(await everyFile(stateFolder(layout.handlerDir, HANDLER_NAME))),
              { file: 'output', text: result.message },
              { file: 'warnings', text: warnings.join('\n') },
            ];
            assert.ok(
              places.some((place) => place.file.endsWith('.log')),
              'a log was written',
            );
            assert.ok(
              places.some((place) => place.file.startsWith(layout.events)),
              'events were written',
            );
            for (const secret of all) {
              for (const form of forms(secret)) {
                for (const place of places) {
                  assert.ok(
                    !place.text.includes(form),
                    `${JSON.stringify(form)} in ${place.file}: ${place.text.slice(0, 500)}`,
                  );
                }
              }
            }
          } finally {
            await layout.cleanup();
          }
        },
      ),
      runs(150),
    );
  });

  // Regression (found by the property above): a secret holding a quote, a backslash or a
  // newline reached the log file escaped by the log's formatting, where redaction missed it.
  test('a secret with a quote, a backslash or a newline is redacted from the log file', async () => {
    await withTemporaryFolder(async (dir) => {
      const secret = 'pa"ss\nwo\\rd';
      const log = createFileLog({
        folder: dir,
        fileName: 'h.log',
        context: { operation: 'enable', sequenceNumber: 0, version: '1' },
      });
      log.addSecret(secret);
      log.info(`the password is ${secret}`, { password: secret });
      await log.close();
      const text = await readFile(path.join(dir, 'h.log'), 'utf8');
      for (const form of forms(secret)) assert.ok(!text.includes(form), text);
      assert.match(text, /the password is \[REDACTED\] password=\[REDACTED\]/);
    });
  });

  // Regression (found by the property above): the output of a command that succeeded, which the
  // agent copies into its own log, was not redacted.
  test('the output of a command that succeeded is redacted', async () => {
    const layout = await handlerLayout();
    try {
      const thumbprint = 'F'.repeat(40);
      await writeFile(path.join(layout.lib, `${thumbprint}.crt`), 'c');
      await writeFile(path.join(layout.lib, `${thumbprint}.prv`), 'k');
      await layout.writeSettings(0, settingsFile({}, 'MIIBencrypted', thumbprint));
      const result = await runCommand('enable', {
        extension: {
          ...aadSshLoginForLinux,
          run: {
            ...aadSshLoginForLinux.run,
            enable: async () => ({ status: 'success', message: 'used hunter2-secret.' }),
          },
        },
        version: '1.0.0.0',
        handlerDir: layout.handlerDir,
        env: { ConfigSequenceNumber: '0' },
        clock: fakeClock(),
        processes: fakeProcesses(() => ({ stdout: '{"password":"hunter2-secret"}' })),
        createLog: (options) => createFileLog(options),
      });
      assert.equal(result.exitCode, 0);
      assert.equal(result.message, 'Enable succeeded: used [REDACTED].');
    } finally {
      await layout.cleanup();
    }
  });

  // Claim: the IMDS token is thrown away unread even when IMDS fails around it: no message of
  // the identity check carries an access token, whatever the status it came with.
  test('an IMDS answer carrying a token never reaches a message', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 100, max: 599 }), fc.boolean(), async (status, flaky) => {
        const layout = await handlerLayout();
        try {
          let calls = 0;
          const imds = {
            get: async (): Promise<ImdsAnswer> => {
              calls++;
              if (flaky && calls === 1) throw new ImdsUnreachable('connect ETIMEDOUT');
              return {
                status,
                body: JSON.stringify({ access_token: 'opaque-MOCKTOKEN-value', error: 'e' }),
                retryAfterMs: undefined,
              };
            },
          };
          const { checkSystemAssignedIdentity } = await import(
            '../../src/linux/checks/identity.js'
          );
          const log = createFileLog({
            folder: layout.log,
            fileName: 'h.log',
            context: { operation: 'enable', sequenceNumber: 0, version: '1' },
          });
          let message = '';
          try {
            message = await checkSystemAssignedIdentity({ imds, clock: fakeClock(), log });
          } catch (error) {
            message = error instanceof HandlerFailure ? error.operatorMessage : String(error);
          }
          await log.close();
          assert.ok(!message.includes('MOCKTOKEN'), message);
          for (const { text } of await everyFile(layout.log))
            assert.ok(!text.includes('MOCKTOKEN'));
        } finally {
          await layout.cleanup();
        }
      }),
      runs(100),
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Only keys whose fingerprints are trusted are installed
// ---------------------------------------------------------------------------------------------

describe('only trusted keys', () => {
  // Claim: from any key file (any number of keys, old or new packet format, with subkeys, in one
  // armored block or one block each), the trusted keys are exactly those whose fingerprint is
  // trusted (any case), the others are named as refused, and the keyring written from the
  // trusted keys holds no other primary key.
  test('exactly the keys with a trusted fingerprint are kept, and nothing else rides along', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            material: keyMaterial,
            oldFormat: fc.boolean(),
            subkey: fc.boolean(),
            trusted: fc.boolean(),
          }),
          { minLength: 1, maxLength: 5 },
        ),
        fc.boolean(),
        fc.boolean(),
        (specs, lowerCase, blockEach) => {
          const keys = specs.map((spec) => ({ ...spec, ...syntheticKey(spec.material, spec) }));
          const trustedList = keys
            .filter((key) => key.trusted)
            .map((key) => (lowerCase ? key.fingerprint.toLowerCase() : key.fingerprint));
          const file = blockEach
            ? keys.map((key) => armor(key.packets)).join('')
            : armor(Buffer.concat(keys.map((key) => key.packets)));
          const split = trustedKeys(file, trustedList);
          const expected = keys.filter((key) => key.trusted).map((key) => key.fingerprint);
          // Two generated keys may be the same key; the set is what counts.
          assert.deepEqual(
            [...new Set(split.trusted.map((key) => key.fingerprint))],
            [...new Set(expected)],
          );
          for (const fingerprint of split.refused) assert.ok(!expected.includes(fingerprint));
          const keyring = Buffer.concat(split.trusted.map((key) => key.packets));
          for (const key of publicKeys(keyring)) assert.ok(expected.includes(key.fingerprint));
        },
      ),
      runs(300),
    );
  });

  // Claim: every repository file the handler would write, for every supported distribution in
  // the corpus and both architectures, with or without a mirror, makes the package manager check
  // signatures against our key file only: apt's signed-by our keyring (never trusted=yes), rpm's
  // gpgcheck=1, repo_gpgcheck=1 and gpgkey=file:// our key file.
  test('every repository file requires signatures by the key file we verified', () => {
    const settingsList: LinuxSettings[] = [
      { repository: { baseUrl: undefined, keyFingerprints: [] } },
      {
        repository: {
          baseUrl: 'http://mirror.example.test/pmc',
          keyFingerprints: ['A'.repeat(40)],
        },
      },
    ];
    let checked = 0;
    for (const os of supported) {
      for (const architecture of ['x86_64', 'aarch64']) {
        if (!supportVerdict(os, architecture).supported) continue;
        for (const settings of settingsList) {
          const plan = planInstall(os, architecture, settings, new Map());
          assert.ok(plan, `${os.id} ${os.versionId}`);
          const { keys } = plan.repository;
          assert.ok(
            MICROSOFT_KEY_FINGERPRINTS.every((fingerprint) =>
              keys.trustedFingerprints.includes(fingerprint),
            ),
          );
          assert.deepEqual(
            keys.trustedFingerprints.filter(
              (fingerprint) =>
                !(MICROSOFT_KEY_FINGERPRINTS as readonly string[]).includes(fingerprint),
            ),
            settings.repository.keyFingerprints,
          );
          for (const { content } of plan.repository.alternatives) {
            if (plan.repository.manager === 'apt') {
              assert.equal(keys.file, KEY_FILE.apt);
              assert.match(
                content,
                new RegExp(`^deb \\[arch=\\w+ signed-by=${KEY_FILE.apt}\\] `, 'm'),
              );
              assert.doesNotMatch(content, /trusted=|allow-insecure|allow-weak/);
            } else {
              assert.equal(keys.file, KEY_FILE.rpm);
              assert.match(content, /^gpgcheck=1$/m);
              assert.match(content, /^repo_gpgcheck=1$/m);
              assert.match(content, new RegExp(`^gpgkey=file://${KEY_FILE.rpm}$`, 'm'));
              assert.doesNotMatch(content, /gpgcheck=0|sslverify=0/);
            }
            checked++;
          }
        }
      }
    }
    assert.ok(checked >= 100, `${checked} repository files`);
  });
});
