import assert from 'node:assert/strict';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { HandlerFailure } from '../../src/failures.js';
import { describeBody, directImds, type ImdsAnswer, ImdsUnreachable } from '../../src/io/imds.js';
import { fileStateStore, handlerStateSchema } from '../../src/lifecycle/state.js';
import { checkSystemAssignedIdentity } from '../../src/linux/checks/identity.js';
import { installedLegacyPackages, LEGACY_PACKAGES } from '../../src/linux/checks/legacy.js';
import { parseMemTotalKib } from '../../src/linux/checks/memory.js';
import { parseOsRelease } from '../../src/linux/checks/os-release.js';
import { compareVersions, supportVerdict } from '../../src/linux/checks/support-matrix.js';
import { readInstallation, readJournal } from '../../src/linux/journal.js';
import { armor, dearmor, publicKeys, trustedKeys } from '../../src/linux/keys.js';
import type { Machine } from '../../src/linux/machine.js';
import { findLockHolders, parseProcLocks } from '../../src/linux/package-lock.js';
import { apt } from '../../src/linux/package-managers/apt.js';
import { parseRpmQuery } from '../../src/linux/package-managers/rpm-family.js';
import { planInstall } from '../../src/linux/plan.js';
import {
  authorizedKeysCommandWarnings,
  checkNsswitch,
  checkPam,
  checkSelinux,
  checkSshd,
  opensshWarning,
  pamLocalChange,
  sshdWarnings,
} from '../../src/linux/registrations.js';
import { fetchTrustedKeys } from '../../src/linux/repository-fetch.js';
import { parseLinuxSettings } from '../../src/linux/settings.js';
import { parseHandlerEnvironment } from '../../src/protocol/handler-environment.js';
import { acquireLock } from '../../src/protocol/lock.js';
import { decryptProtectedSettings } from '../../src/protocol/protected-settings.js';
import { resolveSequenceNumber } from '../../src/protocol/sequence.js';
import { readSettings } from '../../src/protocol/settings.js';
import {
  agentStatusFileSchema,
  MAX_MESSAGE_CHARS,
  MAX_STATUS_FILE_BYTES,
  readStatus,
  renderStatus,
  STATUS_VALUES,
  writeStatus,
} from '../../src/protocol/status.js';
import { aadLoginForWindows } from '../../src/windows/extension.js';
import { parseDsregStatus } from '../../src/windows/join.js';
import { parseRegQuery } from '../../src/windows/platform.js';
import { fakeClock, fakeProcesses, memoryLog, temporaryFolder } from '../fakes.js';
import { osReleaseFixture } from '../fixtures.js';
import { assertReadable, keyMaterial, runs, syntheticKey } from './bad-input-world.js';

/**
 * Property-based tests of every parser of what the handler reads from outside: os-release,
 * meminfo, HandlerEnvironment.json, settings, protected settings, status read-back, handler state,
 * lock files, package-manager output, /proc/locks, IMDS answers (as data and on the wire),
 * repository keys, reg.exe and dsregcmd output. The claim is the same for each: whatever the
 * input, the parser returns a value of its type or fails the way its callers expect (a catalogued
 * `HandlerFailure`, or `undefined`), and never throws anything else. Where a well-formed input
 * can be generated, the parser is also checked to read it back exactly.
 */

/** Any text a file could hold: ASCII, any Unicode (control characters included), or bytes. */
const anyText = fc.oneof(
  fc.string({ maxLength: 200 }),
  fc.string({ unit: 'binary', maxLength: 200 }),
  fc.string({ unit: 'binary-ascii', maxLength: 200 }),
  fc.uint8Array({ maxLength: 200 }).map((bytes) => Buffer.from(bytes).toString('utf8')),
);

/** Hexadecimal digits, either case. */
function hex(length: { minLength: number; maxLength: number }): fc.Arbitrary<string> {
  return fc.string({ unit: fc.constantFrom(...'0123456789abcdefABCDEF'), ...length });
}

/** Text made of lines that look like the real thing, with garbage lines mixed in. */
function linesOf(line: fc.Arbitrary<string>): fc.Arbitrary<string> {
  return fc
    .array(fc.oneof({ weight: 3, arbitrary: line }, { weight: 1, arbitrary: anyText }), {
      maxLength: 12,
    })
    .chain((lines) =>
      fc.constantFrom('\n', '\r\n').map((eol) => lines.join(eol) + (lines.length ? eol : '')),
    );
}

const RELEASES = [
  'debian-12',
  'ubuntu-22.04',
  'almalinux-9.4',
  'rhel-7.9-atomic-host',
  'sles-15.5',
  'opensuse-leap-15.6',
  'azurelinux-3.0',
  'mariner-2.0',
  'slackware-15.0-crlf',
  'arch',
];
const releaseTexts = new Map<string, string>();
before(async () => {
  for (const name of RELEASES) releaseTexts.set(name, await osReleaseFixture(name));
});

/** A real os-release file with lines dropped, repeated, cut short or replaced by garbage. */
const mutatedRelease = fc
  .tuple(
    fc.constantFrom(...RELEASES),
    fc.array(fc.tuple(fc.nat(), fc.constantFrom('drop', 'repeat', 'cut', 'garbage'), anyText), {
      maxLength: 5,
    }),
  )
  .map(([name, edits]) => {
    const lines = (releaseTexts.get(name) ?? '').split('\n');
    for (const [at, edit, garbage] of edits) {
      const index = at % Math.max(lines.length, 1);
      const line = lines[index] ?? '';
      if (edit === 'drop') lines.splice(index, 1);
      else if (edit === 'repeat') lines.splice(index, 0, line);
      else if (edit === 'cut') lines[index] = line.slice(0, garbage.length % (line.length + 1));
      else lines[index] = garbage;
    }
    return lines.join('\n');
  });

describe('os-release', () => {
  // Claim: any text parses; ID is never empty; no value spans lines; the support verdict is a
  // verdict (never a throw), and a refusal names what was found.
  test('any text, and real files mangled, give an OsRelease and a verdict', () => {
    fc.assert(
      fc.property(
        fc.oneof(anyText, mutatedRelease, linesOf(fc.stringMatching(/^[A-Z_]{1,12}=.{0,20}$/))),
        fc.constantFrom('x86_64', 'aarch64', 'ppc64le', '', 'x86_64\n'),
        (text, architecture) => {
          const os = parseOsRelease(text);
          assert.ok(os.id.length > 0);
          assert.equal(os.id, os.id.toLowerCase());
          assert.ok(os.versionId === undefined || os.versionId === os.versionId.trim());
          assert.ok(os.versionId !== '');
          for (const value of Object.values(os.fields)) assert.ok(!value.includes('\n'));
          const verdict = supportVerdict(os, architecture);
          if (!verdict.supported) {
            assert.ok(verdict.reason.includes(`ID=${os.id}`));
            assertReadable(verdict.reason, 'verdict');
          }
        },
      ),
      runs(500),
    );
  });

  // Claim: a double-quoted value with os-release(5)'s escapes (\\ \" \$ \`) reads back exactly.
  test('quoted values with escapes read back exactly', () => {
    const key = fc
      .stringMatching(/^[A-Za-z_][A-Za-z0-9_]{0,15}$/)
      // `__proto__` cannot be a key of a plain object; no os-release has it.
      .filter((name) => name !== '__proto__');
    // Values hold no line terminator: a newline ends the line, and a lone CR, U+2028 or U+2029
    // inside a line makes it unreadable (the line is skipped, as any other malformed line).
    const value = fc
      .string({ unit: 'binary', maxLength: 40 })
      .filter((text) => !/[\n\r\u2028\u2029]/.test(text));
    fc.assert(
      fc.property(fc.dictionary(key, value, { maxKeys: 8 }), (fields) => {
        const text = Object.entries(fields)
          .map(([name, raw]) => `${name}="${raw.replace(/[\\"$`]/g, (c) => `\\${c}`)}"`)
          .join('\n');
        const parsed = parseOsRelease(text).fields;
        for (const [name, raw] of Object.entries(fields)) assert.equal(parsed[name], raw, name);
      }),
      runs(300),
    );
  });

  // Claim: version comparison is total, antisymmetric and reflexive on any text.
  test('version comparison never throws and is a consistent order', () => {
    const version = fc.oneof(
      fc
        .array(fc.nat({ max: 2 ** 31 }), { minLength: 1, maxLength: 4 })
        .map((parts) => parts.join('.')),
      fc.string({ maxLength: 12 }),
    );
    fc.assert(
      fc.property(version, version, (a, b) => {
        const ab = compareVersions(a, b);
        assert.ok([-1, 0, 1].includes(ab));
        assert.equal(ab, -compareVersions(b, a) || 0);
        assert.equal(compareVersions(a, a), 0);
      }),
      runs(500),
    );
  });
});

describe('/proc/meminfo', () => {
  // Claim: any text gives a whole number of kB or undefined, never NaN and never a throw.
  test('any text gives a number of kB or undefined', () => {
    fc.assert(
      fc.property(
        fc.oneof(anyText, linesOf(fc.stringMatching(/^\w+:\s+\d{1,12}( kB)?$/))),
        (text) => {
          const kib = parseMemTotalKib(text);
          assert.ok(kib === undefined || (Number.isInteger(kib) && kib >= 0), String(kib));
        },
      ),
      runs(500),
    );
  });

  // Claim: MemTotal is found among any other meminfo lines, wherever it is.
  test('MemTotal reads back among other lines', () => {
    const other = fc
      .stringMatching(/^[A-Za-z_()]{1,16}:\s+\d{1,10} kB$/)
      .filter((line) => !/^memtotal:/i.test(line));
    fc.assert(
      fc.property(
        fc.array(other, { maxLength: 20 }),
        fc.nat(),
        fc.nat({ max: 2 ** 40 }),
        (lines, at, kib) => {
          lines.splice(at % (lines.length + 1), 0, `MemTotal:       ${kib} kB`);
          assert.equal(parseMemTotalKib(lines.join('\n')), kib);
        },
      ),
      runs(300),
    );
  });
});

/** A valid HandlerEnvironment.json with one part replaced: a key dropped, a value of a wrong type. */
const VALID_ENVIRONMENT = [
  {
    name: 'Microsoft.Azure.ActiveDirectory.AADSSHLoginForLinux',
    version: 1.0,
    handlerEnvironment: {
      logFolder: '/var/log/azure/x',
      configFolder: '/var/lib/waagent/x/config',
      statusFolder: '/var/lib/waagent/x/status',
      heartbeatFile: '/var/lib/waagent/x/heartbeat.log',
      eventsFolder: '/var/log/azure/x/events',
    },
  },
];
const REQUIRED_FOLDERS = ['logFolder', 'configFolder', 'statusFolder'] as const;

describe('HandlerEnvironment.json', () => {
  // Claim: any text or JSON value is either an environment with three non-empty folders or a
  // problem sentence; nothing throws.
  test('any text or JSON value parses or names its problem', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          anyText,
          fc.jsonValue().map((value) => JSON.stringify(value)),
          fc.jsonValue().map((value) => JSON.stringify([value])),
          fc
            .jsonValue()
            .map((value) => JSON.stringify([{ version: 1, handlerEnvironment: value }])),
        ),
        (text) => {
          const parsed = parseHandlerEnvironment(text);
          if (parsed.ok) {
            for (const folder of REQUIRED_FOLDERS) assert.ok(parsed.value[folder].length > 0);
          } else {
            assertReadable(parsed.problem, 'problem');
          }
        },
      ),
      runs(500),
    );
  });

  // Claim: a required folder that is missing, empty or not a string is refused, naming its key.
  test('a required folder missing or of the wrong type is named', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...REQUIRED_FOLDERS),
        fc.option(fc.oneof(fc.constant(''), fc.integer(), fc.boolean(), fc.array(fc.string())), {
          nil: undefined,
        }),
        (folder, value) => {
          const environment = structuredClone(VALID_ENVIRONMENT);
          const entry = environment[0]?.handlerEnvironment as Record<string, unknown>;
          if (value === undefined) delete entry[folder];
          else entry[folder] = value;
          const parsed = parseHandlerEnvironment(JSON.stringify(environment));
          assert.equal(parsed.ok, false);
          if (!parsed.ok)
            assert.match(parsed.problem, new RegExp(`handlerEnvironment\\.${folder}`));
        },
      ),
      runs(200),
    );
  });
});

describe('settings files', () => {
  let folder: { dir: string; cleanup(): Promise<void> };
  before(async () => {
    folder = await temporaryFolder();
  });
  after(async () => folder.cleanup());

  const handlerSettings = fc.record(
    {
      publicSettings: fc.oneof(fc.constant(null), fc.object(), fc.jsonValue()),
      protectedSettings: fc.oneof(fc.constant(null), fc.string(), fc.base64String(), fc.integer()),
      protectedSettingsCertThumbprint: fc.oneof(
        fc.constant(null),
        fc.string(),
        fc.stringMatching(/^[0-9A-F]{40}$/),
      ),
    },
    { requiredKeys: [] },
  );
  const settingsText = fc.oneof(
    anyText,
    fc.jsonValue().map((value) => JSON.stringify(value)),
    fc
      .array(fc.oneof(fc.record({ handlerSettings }), fc.jsonValue()), { maxLength: 2 })
      .map((runtimeSettings) => JSON.stringify({ runtimeSettings })),
    fc.constantFrom('', '\uFEFF', '  \n', 'null', '{}', '{"runtimeSettings": []}'),
  );

  // Claim: whatever config/<seq>.settings holds, reading it gives settings or a catalogued
  // failure (53 invalid settings, 61 protected settings without a thumbprint) naming the file.
  test('any file content gives settings or a catalogued failure naming the file', async () => {
    await fc.assert(
      fc.asyncProperty(settingsText, async (text) => {
        const file = path.join(folder.dir, '7.settings');
        await writeFile(file, text);
        try {
          const settings = await readSettings(folder.dir, 7);
          assert.equal(typeof settings.publicSettings, 'object');
          assert.ok(settings.publicSettings !== null && !Array.isArray(settings.publicSettings));
        } catch (error) {
          assert.ok(error instanceof HandlerFailure, String(error));
          assert.ok([53, 61].includes(error.code), error.kind);
          assert.ok(error.detail.includes(file), error.detail);
          assertReadable(error.operatorMessage, 'settings failure');
        }
      }),
      runs(300),
    );
  });

  // Claim: any public settings object is accepted (with warnings for unknown keys) or refused
  // with code 53 by a message that names the key at fault, for both extensions.
  test('any public settings are accepted or refused naming the key', () => {
    const repository = fc.oneof(
      fc.jsonValue(),
      fc.record(
        {
          baseUrl: fc.oneof(fc.webUrl(), fc.string(), fc.jsonValue()),
          keyFingerprints: fc.oneof(
            fc.array(fc.oneof(hex({ minLength: 38, maxLength: 42 }), fc.jsonValue())),
            fc.jsonValue(),
          ),
          extra: fc.jsonValue(),
        },
        { requiredKeys: [] },
      ),
    );
    fc.assert(
      fc.property(
        fc.oneof(fc.object(), fc.record({ repository }, { requiredKeys: [] })),
        (publicSettings) => {
          const windows = aadLoginForWindows.parseSettings(
            publicSettings as Record<string, unknown>,
          );
          assert.ok(Array.isArray(windows.warnings));
          try {
            const { settings, warnings } = parseLinuxSettings(
              publicSettings as Record<string, unknown>,
            );
            for (const warning of warnings) assert.match(warning, /^Unknown public setting "/);
            for (const fingerprint of settings.repository.keyFingerprints) {
              assert.match(fingerprint, /^[0-9A-F]{40}$/);
            }
          } catch (error) {
            assert.ok(error instanceof HandlerFailure, String(error));
            assert.equal(error.code, 53);
            assert.match(error.detail, /^Public setting "repository(\.[\w.]+)?" /);
          }
        },
      ),
      runs(500),
    );
  });

  // Claim: whatever openssl prints (or however it fails), decryption gives an object or code
  // 61, and a failure never quotes what openssl printed (it may be the decrypted secret).
  test('any decrypted output gives an object or 61, never quoting it', async () => {
    const thumbprint = 'D'.repeat(40);
    await writeFile(path.join(folder.dir, `${thumbprint}.crt`), 'c');
    await writeFile(path.join(folder.dir, `${thumbprint}.prv`), 'k');
    const secretish = fc.string({ minLength: 6, maxLength: 30 }).map((text) => `S3CRET-${text}`);
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          anyText,
          fc.jsonValue().map((value) => JSON.stringify(value)),
          secretish.map((secret) => `{"password": "${secret}"`),
          secretish.map((secret) => `["${secret}"]`),
        ),
        fc.constantFrom(0, 0, 1, 127),
        fc.oneof(fc.base64String({ minLength: 4 }), anyText),
        async (stdout, exitCode, data) => {
          const processes = fakeProcesses(() => ({ exitCode, stdout, stderr: '' }));
          try {
            const value = await decryptProtectedSettings(
              { data, thumbprint },
              { certificateFolder: folder.dir, processes },
            );
            assert.ok(value && typeof value === 'object' && !Array.isArray(value));
          } catch (error) {
            assert.ok(error instanceof HandlerFailure, String(error));
            assert.equal(error.code, 61);
            if (stdout.trim().length >= 4) assert.ok(!error.detail.includes(stdout.trim()));
            assertReadable(error.operatorMessage, 'decrypt failure');
          }
        },
      ),
      runs(300),
    );
  });

  // Claim: any ConfigSequenceNumber and any file names in config/ give a whole sequence number.
  test('any ConfigSequenceNumber and config folder give a sequence number', async () => {
    const { dir, cleanup } = await temporaryFolder();
    try {
      await fc.assert(
        fc.asyncProperty(
          fc.option(fc.oneof(fc.string(), fc.nat().map(String)), { nil: undefined }),
          fc.array(
            fc.oneof(
              fc.nat({ max: 10_000 }).map((n) => `${n}.settings`),
              fc.stringMatching(/^[\w.-]{1,20}$/).filter((name) => name !== '.' && name !== '..'),
            ),
            { maxLength: 5 },
          ),
          async (fromAgent, names) => {
            for (const name of names) await writeFile(path.join(dir, name), '');
            const sequence = await resolveSequenceNumber({ ConfigSequenceNumber: fromAgent }, dir);
            assert.ok(Number.isInteger(sequence.value) && sequence.value >= 0);
            if (fromAgent !== undefined && /^\d+$/.test(fromAgent.trim())) {
              assert.equal(sequence.value, Number(fromAgent.trim()));
            }
            for (const name of names) await rm(path.join(dir, name), { force: true });
          },
        ),
        runs(200),
      );
    } finally {
      await cleanup();
    }
  });
});

describe('status files', () => {
  const statusText = fc.oneof(
    anyText,
    fc.jsonValue().map((value) => JSON.stringify(value)),
    fc
      .record({
        status: fc.oneof(fc.constantFrom(...STATUS_VALUES), fc.string()),
        code: fc.oneof(fc.integer(), fc.double(), fc.string()),
        formattedMessage: fc.oneof(
          fc.record({ lang: fc.string(), message: fc.string() }),
          fc.jsonValue(),
        ),
        substatus: fc.oneof(fc.constant(null), fc.array(fc.jsonValue(), { maxLength: 3 })),
      })
      .map((status) => JSON.stringify([{ version: 1, status }])),
  );

  // Claim: reading back any status file gives a status the agent accepts, or undefined; writing
  // `transitioning` over any of them never throws, keeps a terminal status of the same sequence
  // number, and leaves a file the agent accepts.
  test('any status file reads back as valid or undefined, and transitioning writes over it', async () => {
    const { dir, cleanup } = await temporaryFolder();
    try {
      await fc.assert(
        fc.asyncProperty(statusText, async (text) => {
          await writeFile(path.join(dir, '3.status'), text);
          const current = await readStatus(dir, 3);
          if (current !== undefined) assert.ok(agentStatusFileSchema.safeParse(current).success);
          await writeStatus(
            dir,
            3,
            {
              operation: 'Enable',
              status: 'transitioning',
              code: 0,
              message: 'Enable in progress.',
            },
            { handlerName: 'H', now: new Date() },
          );
          const after = agentStatusFileSchema.parse(
            JSON.parse(await readFile(path.join(dir, '3.status'), 'utf8')),
          );
          const before = current?.[0]?.status.status;
          assert.equal(
            after[0]?.status.status,
            before && before !== 'transitioning' ? before : 'transitioning',
          );
        }),
        runs(300),
      );
    } finally {
      await cleanup();
    }
  });

  // Claim: any report (any text in messages and names, any number of substatus entries) renders
  // as a file the agent accepts, inside its limits of 1 KiB per message and 128 KiB per file.
  test('any report renders inside the agent limits', () => {
    const text = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 3000 }),
      fc.string({ maxLength: 50 }),
      // Lone surrogates: what cutting a message in the middle of an emoji leaves.
      fc
        .string({ maxLength: 20 })
        .map((prefix) => `${prefix}\ud83d`),
    );
    const entry = fc.record({
      name: text,
      status: fc.constantFrom(...STATUS_VALUES),
      code: fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }),
      message: text,
    });
    fc.assert(
      fc.property(
        fc.constantFrom(...STATUS_VALUES),
        fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }),
        text,
        fc.array(entry, { maxLength: 200, size: 'max' }),
        (status, code, message, substatus) => {
          const rendered = renderStatus(
            { operation: 'Enable', status, code, message, substatus },
            'H',
            new Date(),
          );
          assert.ok(Buffer.byteLength(rendered) <= MAX_STATUS_FILE_BYTES);
          const parsed = agentStatusFileSchema.parse(JSON.parse(rendered));
          const top = parsed[0]?.status;
          assert.ok((top?.formattedMessage?.message.length ?? 0) <= MAX_MESSAGE_CHARS);
          for (const sub of top?.substatus ?? []) {
            assert.ok((sub?.formattedMessage?.message.length ?? 0) <= MAX_MESSAGE_CHARS);
          }
        },
      ),
      runs(100),
    );
  });
});

describe('handler state and lock files', () => {
  // Claim: any state file loads as a valid state (a bad one is moved aside, never deleted), and
  // any `installed` or `journal` inside a valid one reads as an installation and changes.
  test('any state file loads, and any record inside it reads', async () => {
    const { dir, cleanup } = await temporaryFolder();
    try {
      const stateText = fc.oneof(
        anyText,
        fc.jsonValue().map((value) => JSON.stringify(value)),
        fc
          .record({ installed: fc.jsonValue(), journal: fc.jsonValue() })
          .map((parts) => JSON.stringify({ schemaVersion: 1, owner: null, applied: [], ...parts })),
        fc
          .record({ installed: fc.object(), journal: fc.array(fc.jsonValue()) })
          .map((parts) =>
            JSON.stringify({ schemaVersion: 1, owner: '1.0.0.0', applied: [], ...parts }),
          ),
      );
      await fc.assert(
        fc.asyncProperty(stateText, async (text) => {
          const file = path.join(dir, 'state.json');
          await writeFile(file, text);
          const { state } = await fileStateStore(file).load();
          assert.ok(handlerStateSchema.safeParse(state).success);
          readInstallation(state);
          for (const change of readJournal(state)) assert.ok(change.kind);
          await rm(dir, { recursive: true, force: true });
          await mkdir(dir);
        }),
        runs(300),
      );
    } finally {
      await cleanup();
    }
  });

  // Claim: whatever a lock file left behind holds, the next command takes the lock once its
  // holder is gone (an unreadable one after a short grace), and never fails otherwise.
  test('any leftover lock file is taken over', async () => {
    const { dir, cleanup } = await temporaryFolder();
    try {
      const holder = fc.record({
        pid: fc.integer(),
        startTime: fc.option(fc.string(), { nil: null }),
        operation: fc.string(),
        version: fc.string(),
        acquiredAt: fc.string(),
      });
      await fc.assert(
        fc.asyncProperty(
          fc.oneof(
            anyText,
            holder.map((value) => JSON.stringify(value)),
          ),
          async (text) => {
            const file = path.join(dir, 'lock');
            await writeFile(file, text);
            const clock = fakeClock(new Date(Date.now() + 60_000));
            try {
              const lock = await acquireLock({
                file,
                operation: 'enable',
                version: '1.0.0.0',
                clock,
                waitMs: 60_000,
                processes: { startTimeOf: async (pid) => (pid === process.pid ? '1' : undefined) },
              });
              await lock.release();
            } catch (error) {
              // Only a holder that is alive (this very process, by chance) may keep the lock.
              assert.ok(error instanceof HandlerFailure && error.code === 62, String(error));
              await rm(file, { force: true });
            }
          },
        ),
        runs(200),
      );
    } finally {
      await cleanup();
    }
  });
});

describe('package-manager output', () => {
  const field = fc.stringMatching(/^[a-z0-9][a-z0-9.+:~-]{0,20}$/);

  // Claim: any dpkg-query or rpm -q output gives a map of non-empty names to non-empty versions.
  test('any output gives a map of names to versions', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          anyText,
          linesOf(fc.tuple(field, fc.string(), field).map((parts) => parts.join('\t'))),
        ),
        (text) => {
          for (const parsed of [apt.parseInstalled(text), parseRpmQuery(text)]) {
            for (const [name, version] of parsed) {
              assert.ok(name.length > 0 && version.length > 0);
              assert.ok(!/[\n\t]/.test(name + version));
            }
          }
        },
      ),
      runs(500),
    );
  });

  // Claim: what the query commands print is read back exactly; packages rpm says are missing
  // ("package x is not installed") and dpkg says are not installed are absent.
  test('real-shaped answers read back exactly', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.tuple(field, field, fc.boolean()), { selector: (entry) => entry[0] }),
        (packages) => {
          const dpkg = packages
            .map(([name, version, installed]) =>
              installed
                ? `${name}\tinstall ok installed\t${version}\n`
                : `${name}\tdeinstall ok config-files\t${version}\n`,
            )
            .join('');
          const rpm = packages
            .map(([name, version, installed]) =>
              installed ? `${name}\t${version}\n` : `package ${name} is not installed\n`,
            )
            .join('');
          const expected = new Map(
            packages
              .filter(([, , installed]) => installed)
              .map(([name, version]) => [name, version]),
          );
          assert.deepEqual(apt.parseInstalled(dpkg), expected);
          assert.deepEqual(parseRpmQuery(rpm), expected);
        },
      ),
      runs(300),
    );
  });

  // Claim: whatever dpkg-query and rpm print, the legacy check names only aadlogin packages.
  test('the legacy check reads any answer as a list of legacy packages', async () => {
    await fc.assert(
      fc.asyncProperty(anyText, anyText, fc.integer(), async (dpkg, rpm, exitCode) => {
        const processes = fakeProcesses((file) => ({
          exitCode,
          stdout: file === 'rpm' ? rpm : dpkg,
        }));
        const found = await installedLegacyPackages(processes);
        for (const name of found) assert.ok((LEGACY_PACKAGES as readonly string[]).includes(name));
      }),
      runs(300),
    );
  });

  // Claim: any /proc/locks text gives locks with positive pids; real lines read back exactly.
  test('/proc/locks: any text, and real lines read back', () => {
    const lockLine = fc
      .record({
        pid: fc.integer({ min: 1, max: 2 ** 22 }),
        major: fc.nat({ max: 4095 }),
        minor: fc.nat({ max: 2 ** 20 - 1 }),
        inode: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
        kind: fc.constantFrom(
          'POSIX  ADVISORY  WRITE',
          'FLOCK  ADVISORY  WRITE',
          'OFDLCK ADVISORY  READ',
        ),
      })
      .map((lock) => ({
        lock,
        line: `1: ${lock.kind} ${lock.pid} ${lock.major.toString(16).padStart(2, '0')}:${lock.minor.toString(16).padStart(2, '0')}:${lock.inode} 0 EOF`,
      }));
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            lockLine,
            anyText.map((line) => ({ lock: undefined, line })),
          ),
        ),
        (entries) => {
          const text = entries.map((entry) => entry.line).join('\n');
          const parsed = parseProcLocks(text);
          for (const lock of parsed) assert.ok(Number.isInteger(lock.pid) && lock.pid > 0);
          const expected = entries.flatMap((entry) =>
            entry.lock && !entry.line.includes('->')
              ? [
                  {
                    pid: entry.lock.pid,
                    major: entry.lock.major,
                    minor: entry.lock.minor,
                    inode: entry.lock.inode,
                  },
                ]
              : [],
          );
          // Garbage lines may parse as locks too (other programs' locks); the real ones are all there.
          for (const lock of expected) {
            assert.ok(
              parsed.some(
                (found) =>
                  found.pid === lock.pid &&
                  found.major === lock.major &&
                  found.minor === lock.minor &&
                  found.inode === lock.inode,
              ),
              JSON.stringify({ ...lock, inode: String(lock.inode) }),
            );
          }
        },
      ),
      runs(300),
    );
  });

  // Claim: whatever /proc, pid files and stat say, the holders are named with positive pids.
  test('lock holders are found from any /proc text without throwing', async () => {
    await fc.assert(
      fc.asyncProperty(
        anyText,
        anyText,
        anyText,
        fc.option(
          fc.record({
            major: fc.nat(),
            minor: fc.nat(),
            inode: fc.bigInt({ min: 0n, max: 2n ** 64n }),
          }),
          { nil: undefined },
        ),
        async (locks, pidFile, comm, identity) => {
          const holders = await findLockHolders(['/var/lib/dpkg/lock', '/run/zypp.pid'], {
            readText: async (file) =>
              file === '/proc/locks' ? locks : file.endsWith('.pid') ? pidFile : comm,
            identity: async () => identity,
          });
          for (const holder of holders) assert.ok(Number.isInteger(holder.pid) && holder.pid > 0);
        },
      ),
      runs(300),
    );
  });
});

describe('IMDS answers', () => {
  const TOKEN = 'eyJ0eXAiOiJKV1QifQ.eyJNT0NLVE9LRU4iOjF9.MOCKTOKEN_signature';
  const body = fc.oneof(
    anyText,
    fc.jsonValue().map((value) => JSON.stringify(value)),
    fc.constantFrom(
      `{"access_token":"${TOKEN}","expires_in":"3599"}`,
      '{"access_token":""}',
      '{"error":"invalid_request","error_description":"Identity not found"}',
      'Identity not found',
      '{"error":"throttled"}',
    ),
  );
  const answer: fc.Arbitrary<ImdsAnswer | 'unreachable'> = fc.oneof(
    fc.constant('unreachable' as const),
    fc.record({
      status: fc.oneof(
        fc.constantFrom(200, 400, 404, 410, 429, 500, 503),
        fc.integer({ min: 0, max: 999 }),
      ),
      body,
      retryAfterMs: fc.option(
        fc.oneof(fc.nat({ max: 200_000 }), fc.constant(Number.POSITIVE_INFINITY)),
        {
          nil: undefined,
        },
      ),
    }),
  );

  // Claim: whatever IMDS answers, in whatever order, the identity check ends (22, 25 or
  // present) without throwing anything else, and no message or log line carries the token.
  test('any sequence of answers ends the identity check with 22, 25 or success', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(answer, { minLength: 1, maxLength: 6 }), async (script) => {
        let call = 0;
        const log = memoryLog();
        const clock = fakeClock();
        const imds = {
          get: async () => {
            const next = script[call++ % script.length] ?? 'unreachable';
            if (next === 'unreachable') throw new ImdsUnreachable('connect ECONNREFUSED');
            return next;
          },
        };
        try {
          const message = await checkSystemAssignedIdentity({ imds, clock, log });
          assertReadable(message, 'identity');
          assert.ok(!message.includes('MOCKTOKEN'));
        } catch (error) {
          assert.ok(error instanceof HandlerFailure, String(error));
          assert.ok([22, 25].includes(error.code), `${error.code} ${error.detail}`);
          assertReadable(error.operatorMessage, 'identity failure');
          assert.ok(!error.detail.includes('MOCKTOKEN'));
        }
        assert.ok(!JSON.stringify(log.lines).includes('MOCKTOKEN'));
        assert.ok(call < 500, `${call} requests`);
      }),
      runs(300),
    );
  });

  // Claim: any error body is described in one short line, or not at all.
  test('error bodies are described briefly', () => {
    fc.assert(
      fc.property(body, (text) => {
        const described = describeBody(text);
        assert.ok(described.length <= 210);
        assert.ok(!described.includes('MOCKTOKEN'));
      }),
      runs(300),
    );
  });

  // Claim: on the wire, any HTTP answer (any status, Retry-After, body) is read as an answer
  // with a usable Retry-After, and any bytes that are not HTTP at all are `ImdsUnreachable`.
  test('the IMDS client reads any answer on the wire, or says IMDS is unreachable', async () => {
    let next: { status: number; retryAfter: string | undefined; body: Uint8Array } = {
      status: 200,
      retryAfter: undefined,
      body: new Uint8Array(),
    };
    const server = http.createServer((_request, response) => {
      response.writeHead(
        next.status,
        next.retryAfter === undefined ? {} : { 'Retry-After': next.retryAfter },
      );
      response.end(Buffer.from(next.body));
    });
    let raw = Buffer.alloc(0);
    const rawServer = net.createServer((socket) => {
      socket.on('error', () => undefined);
      socket.once('data', () => socket.end(raw));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    await new Promise<void>((resolve) => rawServer.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    const rawPort = (rawServer.address() as net.AddressInfo).port;
    try {
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: 200, max: 599 }),
          fc.option(
            fc.oneof(
              fc.nat().map(String),
              fc.constantFrom(
                '1e308',
                '-5',
                'Wed, 21 Oct 2015 07:28:00 GMT',
                'soon',
                '',
                'Infinity',
              ),
              fc.stringMatching(/^[\x21-\x7e]{0,20}$/),
            ),
            { nil: undefined },
          ),
          fc.uint8Array({ maxLength: 2000 }),
          async (status, retryAfter, bytes) => {
            next = { status, retryAfter, body: bytes };
            const got = await directImds('127.0.0.1', port).get('/metadata/identity', {
              timeoutMs: 5000,
            });
            assert.equal(got.status, status);
            // 204 and 304 carry no body by HTTP's rules.
            const sent =
              status === 204 || status === 304 ? '' : Buffer.from(bytes).toString('utf8');
            assert.equal(got.body, sent);
            assert.ok(
              got.retryAfterMs === undefined || got.retryAfterMs >= 0,
              String(got.retryAfterMs),
            );
          },
        ),
        runs(100),
      );
      await fc.assert(
        fc.asyncProperty(
          fc.oneof(
            fc.uint8Array({ maxLength: 300 }).map((bytes) => Buffer.from(bytes)),
            fc
              .tuple(
                fc.string({ unit: 'binary-ascii', maxLength: 60 }),
                fc.uint8Array({ maxLength: 100 }),
              )
              .map(([head, tail]) => Buffer.concat([Buffer.from(`HTTP/1.1 ${head}\r\n`), tail])),
          ),
          async (bytes) => {
            raw = bytes;
            try {
              const got = await directImds('127.0.0.1', rawPort).get('/metadata/identity', {
                timeoutMs: 5000,
              });
              assert.ok(Number.isInteger(got.status));
            } catch (error) {
              assert.ok(error instanceof ImdsUnreachable, String(error));
              assertReadable(error.message, 'unreachable');
            }
          },
        ),
        runs(100),
      );
    } finally {
      server.close();
      rawServer.close();
    }
  });
});

describe('repository keys', () => {
  // Claim: any text or bytes either read as keys or fail with an Error (which the caller turns
  // into code 20); nothing else is thrown and nothing loops.
  test('any text and any bytes are keys or an Error', () => {
    const armoredGarbage = fc.uint8Array({ maxLength: 400 }).map((bytes) => armor(bytes));
    const mangledKey = fc
      .tuple(
        keyMaterial,
        fc.array(fc.tuple(fc.nat(), fc.nat({ max: 255 })), { maxLength: 4 }),
        fc.nat(),
      )
      .map(([material, flips, cut]) => {
        const packets = Buffer.from(syntheticKey(material, { subkey: true }).packets);
        for (const [at, value] of flips) packets[at % packets.length] = value;
        return armor(packets.subarray(0, packets.length - (cut % 8)));
      });
    fc.assert(
      fc.property(
        fc.oneof(anyText, armoredGarbage, mangledKey),
        fc.array(hex({ minLength: 40, maxLength: 40 })),
        (text, trusted) => {
          const binary = dearmor(text);
          if (binary) {
            try {
              publicKeys(binary);
            } catch (error) {
              assert.ok(error instanceof Error);
            }
          }
          try {
            const split = trustedKeys(text, trusted);
            const wanted = new Set(trusted.map((fingerprint) => fingerprint.toUpperCase()));
            for (const key of split.trusted) assert.ok(wanted.has(key.fingerprint));
            for (const fingerprint of split.refused) assert.ok(!wanted.has(fingerprint));
          } catch (error) {
            assert.ok(error instanceof Error, String(error));
            assertReadable(error.message, 'key error');
          }
        },
      ),
      runs(500),
    );
  });

  // Claim: whatever the repository answers for its key files, fetching keys gives only trusted
  // keys, or code 20 / 27 with a message that says what the repository answered.
  test('any repository answer gives trusted keys, 20 or 27', async () => {
    const trusted = syntheticKey(Buffer.alloc(64, 7));
    const stranger = syntheticKey(Buffer.alloc(64, 9));
    const os = parseOsRelease(await osReleaseFixture('debian-12'));
    const settings = parseLinuxSettings({
      repository: {
        baseUrl: 'https://mirror.example.test',
        keyFingerprints: [trusted.fingerprint],
      },
    }).settings;
    const plan = planInstall(os, 'x86_64', settings, new Map());
    assert.ok(plan);
    const keyBody = fc.oneof(
      anyText,
      fc.constantFrom(
        armor(trusted.packets),
        armor(stranger.packets),
        '<html>captive portal</html>',
      ),
      fc.constant(armor(Buffer.concat([stranger.packets, trusted.packets]))),
    );
    const answer = fc.oneof(
      fc.record({ ok: fc.constant(false as const), problem: fc.string({ minLength: 1 }) }),
      fc.record({
        ok: fc.constant(true as const),
        answer: fc.record({
          status: fc.oneof(
            fc.constantFrom(200, 200, 403, 404, 500),
            fc.integer({ min: 0, max: 999 }),
          ),
          body: keyBody,
        }),
      }),
    );
    await fc.assert(
      fc.asyncProperty(answer, answer, async (first, second) => {
        let call = 0;
        const machine = {
          fetchText: async () => (call++ === 0 ? first : second),
        } as unknown as Machine;
        try {
          const { trusted: keys } = await fetchTrustedKeys(
            {
              machine,
              log: memoryLog(),
              signal: new AbortController().signal,
              budgetMs: () => 1000,
            },
            plan,
          );
          assert.ok(keys.length > 0);
          for (const key of keys) assert.equal(key.fingerprint, trusted.fingerprint);
        } catch (error) {
          assert.ok(error instanceof HandlerFailure, String(error));
          assert.ok([20, 27].includes(error.code), error.detail);
          assertReadable(error.operatorMessage, 'keys failure');
          assert.doesNotMatch(error.detail, /failed unexpectedly/);
        }
      }),
      runs(300),
    );
  });
});

describe('repository keys: regression', () => {
  // Regression (found by the property above): a key file that is not a key was reported as "The
  // handler failed unexpectedly." inside the repository message.
  test('a key file that is not a key says what it is, not that the handler failed', async () => {
    const os = parseOsRelease(await osReleaseFixture('debian-12'));
    const plan = planInstall(
      os,
      'x86_64',
      { repository: { baseUrl: 'https://mirror.example.test', keyFingerprints: [] } },
      new Map(),
    );
    assert.ok(plan);
    const machine = {
      fetchText: async () => ({ ok: true, answer: { status: 200, body: '' } }),
    } as unknown as Machine;
    await assert.rejects(
      fetchTrustedKeys(
        { machine, log: memoryLog(), signal: new AbortController().signal, budgetMs: () => 1000 },
        plan,
      ),
      (error) => {
        assert.ok(error instanceof HandlerFailure);
        assert.equal(error.code, 20);
        assert.equal(
          error.detail,
          'https://mirror.example.test/keys/microsoft.asc did not answer with an OpenPGP key (not an ASCII-armored OpenPGP public key block): a proxy or captive portal may be answering instead of the repository.',
        );
        return true;
      },
    );
  });
});

describe('Windows answers', () => {
  // Claim: any reg.exe output gives a value or undefined; real lines read back exactly.
  test('reg.exe query: any output, and real lines read back', () => {
    const name = fc.stringMatching(/^[A-Za-z][A-Za-z0-9]{0,20}$/);
    fc.assert(
      fc.property(anyText, name, (text, wanted) => {
        const value = parseRegQuery(text, wanted);
        assert.ok(value === undefined || typeof value === 'string');
      }),
      runs(500),
    );
    fc.assert(
      fc.property(
        name,
        fc.oneof(
          fc.record({ type: fc.constant('REG_SZ'), data: fc.stringMatching(/^\S(.{0,30}\S)?$/) }),
          fc.record({ type: fc.constant('REG_DWORD'), data: fc.nat({ max: 2 ** 32 - 1 }) }),
        ),
        (wanted, value) => {
          const data =
            value.type === 'REG_DWORD'
              ? `0x${(value.data as number).toString(16)}`
              : String(value.data);
          const out = `\r\nHKEY_LOCAL_MACHINE\\SOFTWARE\\X\r\n    ${wanted}    ${value.type}    ${data}\r\n\r\n`;
          assert.equal(parseRegQuery(out, wanted), String(value.data));
        },
      ),
      runs(300),
    );
  });

  // Claim: any dsregcmd output gives a map; `Name : value` lines read back (first one wins).
  test('dsregcmd /status: any output, and real lines read back', () => {
    fc.assert(
      fc.property(anyText, (text) => {
        for (const [key, value] of parseDsregStatus(text)) {
          assert.ok(key.length > 0);
          assert.ok(!value.includes('\n'));
        }
      }),
      runs(500),
    );
    fc.assert(
      fc.property(
        fc.uniqueArray(
          fc.tuple(
            fc.stringMatching(/^[A-Za-z][A-Za-z]{0,20}$/),
            fc.stringMatching(/^[\w-]{0,20}$/),
          ),
          { selector: (entry) => entry[0] },
        ),
        (fields) => {
          const out = fields
            .map(([key, value]) => `${' '.repeat(10)}${key} : ${value}`)
            .join('\r\n');
          const parsed = parseDsregStatus(out);
          for (const [key, value] of fields) assert.equal(parsed.get(key), value);
        },
      ),
      runs(300),
    );
  });
});

describe('files the packages register in', () => {
  // Claim: any sshd_config, nsswitch.conf, pam.d file, semodule or ssh -V answer is judged
  // without throwing, and a problem names a file.
  test('any text is judged without throwing', () => {
    fc.assert(
      fc.property(anyText, anyText, (first, second) => {
        const files = [
          { file: '/etc/ssh/sshd_config', text: first },
          { file: '/etc/ssh/sshd_config.d/x.conf', text: second },
        ];
        for (const problem of [
          checkSshd(files),
          checkNsswitch('/etc/nsswitch.conf', first),
          checkPam(files),
          checkSelinux(first),
        ]) {
          if (problem) assertReadable(problem.message, problem.what);
        }
        for (const warning of sshdWarnings('/etc/ssh/sshd_config', first)) {
          assertReadable(warning, 'warning');
        }
        for (const warning of authorizedKeysCommandWarnings('/etc/ssh/sshd_config', first)) {
          assertReadable(warning, 'warning');
        }
        const openssh = opensshWarning(first);
        if (openssh) assertReadable(openssh, 'openssh');
        const pam = pamLocalChange('auth', first, second);
        if (pam) assertReadable(pam, 'pam');
      }),
      runs(500),
    );
  });
});
