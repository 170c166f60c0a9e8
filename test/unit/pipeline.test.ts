import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, test } from 'node:test';
import { HandlerFailure } from '../../src/failures.js';
import { runDryRun } from '../../src/lifecycle/dry-run.js';
import type { DryRunContext, Extension, Outcome } from '../../src/lifecycle/extension.js';
import { operations, type Verb } from '../../src/lifecycle/operations.js';
import {
  type PipelineDependencies,
  runCommand,
  stateFolder,
} from '../../src/lifecycle/pipeline.js';
import { agentStatusFileSchema } from '../../src/protocol/status.js';
import { fakeClock, fakeProcesses, memoryLog, temporaryFolder } from '../fakes.js';

const NAME = 'Microsoft.Azure.ActiveDirectory.AADSSHLoginForLinux';
const THUMBPRINT = 'C'.repeat(40);

type Work = (verb: Verb, settings: { mirror?: string }) => Promise<Outcome>;

function fakeExtension(work: Work): Extension<{ mirror?: string }> & { calls: Verb[] } {
  const calls: Verb[] = [];
  const run = (verb: Verb) => async (context: { settings: { mirror?: string } }) => {
    calls.push(verb);
    return work(verb, context.settings);
  };
  return {
    calls,
    handlerName: NAME,
    logFileName: 'test.log',
    parseSettings: (publicSettings) => {
      if ('mirror' in publicSettings && typeof publicSettings.mirror !== 'string') {
        throw new HandlerFailure('invalidSettings', 'Public setting "mirror" must be a string.');
      }
      return {
        settings: publicSettings as { mirror?: string },
        warnings: Object.keys(publicSettings)
          .filter((key) => key !== 'mirror')
          .map((key) => `Unknown public setting "${key}" is ignored.`),
      };
    },
    run: {
      install: run('install'),
      enable: run('enable'),
      disable: run('disable'),
      uninstall: run('uninstall'),
      update: run('update'),
    },
  };
}

const succeed: Work = async (verb) => ({ status: 'success', message: `${verb} done.` });

/** A handler folder as the agent lays it out, inside a temporary `Lib.Dir`. */
async function handlerFolder(version = '1.0.0.0') {
  const { dir, cleanup } = await temporaryFolder();
  const handlerDir = path.join(dir, `${NAME}-${version}`);
  const config = path.join(handlerDir, 'config');
  const status = path.join(handlerDir, 'status');
  await mkdir(config, { recursive: true });
  await mkdir(status, { recursive: true });
  await writeFile(
    path.join(handlerDir, 'HandlerEnvironment.json'),
    JSON.stringify([
      {
        name: NAME,
        version: 1.0,
        handlerEnvironment: {
          logFolder: path.join(dir, 'log'),
          configFolder: config,
          statusFolder: status,
          heartbeatFile: path.join(handlerDir, 'heartbeat.log'),
        },
      },
    ]),
  );
  const settings = (seq: number, publicSettings: unknown, protectedSettings?: string) =>
    writeFile(
      path.join(config, `${seq}.settings`),
      JSON.stringify({
        runtimeSettings: [
          {
            handlerSettings: {
              publicSettings,
              protectedSettings: protectedSettings ?? null,
              protectedSettingsCertThumbprint: protectedSettings ? THUMBPRINT : null,
            },
          },
        ],
      }),
    );
  const readStatus = async (seq: number) => {
    const parsed = agentStatusFileSchema.parse(
      JSON.parse(await readFile(path.join(status, `${seq}.status`), 'utf8')),
    );
    return parsed[0]?.status;
  };
  const readState = async () =>
    JSON.parse(await readFile(path.join(stateFolder(handlerDir, NAME), 'state.json'), 'utf8'));
  return { lib: dir, handlerDir, config, status, settings, readStatus, readState, cleanup };
}

function dependencies(
  handlerDir: string,
  extension: Extension<{ mirror?: string }>,
  extra: Partial<PipelineDependencies<{ mirror?: string }>> = {},
) {
  const log = memoryLog();
  const deps: PipelineDependencies<{ mirror?: string }> = {
    extension,
    version: '1.0.0.0',
    handlerDir,
    env: { ConfigSequenceNumber: '0' } as Record<string, string | undefined>,
    clock: fakeClock(),
    processes: fakeProcesses(() => ({ exitCode: 1 })),
    createLog: () => log,
    ...extra,
  };
  return { log, deps };
}

describe('lifecycle pipeline', () => {
  test('install reports transitioning, then success, and records what it applied', async () => {
    const folder = await handlerFolder();
    try {
      await folder.settings(0, { mirror: 'https://m' });
      const seen: string[] = [];
      const extension = fakeExtension(async (verb) => {
        seen.push((await folder.readStatus(0))?.status ?? 'none');
        return { status: 'success', message: `${verb} done.` };
      });
      const { deps, log } = dependencies(folder.handlerDir, extension);
      const result = await runCommand('install', deps);
      assert.deepEqual(result, {
        exitCode: 0,
        status: 'success',
        message: 'Install succeeded: install done.',
      });
      assert.deepEqual(seen, ['transitioning']);
      const status = await folder.readStatus(0);
      assert.equal(status?.status, 'success');
      assert.equal(status?.operation, 'Install');
      const state = await folder.readState();
      assert.equal(state.owner, '1.0.0.0');
      assert.deepEqual(
        state.applied.map((entry: { operation: string; sequenceNumber: number }) => [
          entry.operation,
          entry.sequenceNumber,
        ]),
        [['install', 0]],
      );
      assert.ok(log.lines.some((line) => line.message === 'Install started'));
    } finally {
      await folder.cleanup();
    }
  });

  test('a catalogued failure becomes its exit code and an error status with the remedy', async () => {
    const folder = await handlerFolder();
    try {
      const extension = fakeExtension(async () => {
        throw new HandlerFailure(
          'noSystemAssignedIdentity',
          'IMDS answered 400 Identity not found.',
        );
      });
      const { deps } = dependencies(folder.handlerDir, extension);
      const result = await runCommand('enable', deps);
      assert.equal(result.exitCode, 22);
      const status = await folder.readStatus(0);
      assert.equal(status?.status, 'error');
      assert.equal(status?.code, 22);
      assert.match(
        status?.formattedMessage?.message ?? '',
        /^Enable failed: IMDS answered 400 Identity not found\. Enable the system-assigned managed identity/,
      );
      await assert.rejects(folder.readState(), /ENOENT/, 'a failure applies nothing');
    } finally {
      await folder.cleanup();
    }
  });

  test('an unexpected error becomes the generic code with its message and no stack trace', async () => {
    const folder = await handlerFolder();
    try {
      const extension = fakeExtension(async () => {
        throw new TypeError("Cannot read properties of undefined (reading 'x')");
      });
      const { deps } = dependencies(folder.handlerDir, extension);
      const result = await runCommand('enable', deps);
      assert.equal(result.exitCode, 70);
      const message = (await folder.readStatus(0))?.formattedMessage?.message ?? '';
      assert.match(message, /Cannot read properties of undefined/);
      assert.doesNotMatch(message, /\n\s+at /);
    } finally {
      await folder.cleanup();
    }
  });

  test('work that outlives the deadline is stopped and reported with code 63', async () => {
    const folder = await handlerFolder();
    try {
      let aborted = false;
      const extension: Extension<{ mirror?: string }> = {
        ...fakeExtension(succeed),
        run: {
          ...fakeExtension(succeed).run,
          enable: (context) =>
            new Promise((_resolve, reject) => {
              context.signal.addEventListener('abort', () => {
                aborted = true;
                reject(new Error('killed the package manager'));
              });
            }),
        },
      };
      const { deps } = dependencies(folder.handlerDir, extension, {
        operations: { ...operations, enable: { ...operations.enable, deadlineSeconds: 0.2 } },
      });
      const result = await runCommand('enable', deps);
      assert.equal(result.exitCode, 63);
      assert.equal(aborted, true);
      assert.match(
        (await folder.readStatus(0))?.formattedMessage?.message ?? '',
        /stopped itself after 0 s/,
      );
    } finally {
      await folder.cleanup();
    }
  });

  test('invalid public settings fail with 53 before the extension runs', async () => {
    const folder = await handlerFolder();
    try {
      await folder.settings(0, { mirror: 42 });
      const extension = fakeExtension(succeed);
      const { deps } = dependencies(folder.handlerDir, extension);
      const result = await runCommand('enable', deps);
      assert.equal(result.exitCode, 53);
      assert.deepEqual(extension.calls, []);
      assert.match((await folder.readStatus(0))?.formattedMessage?.message ?? '', /"mirror"/);
    } finally {
      await folder.cleanup();
    }
  });

  test('disable and uninstall never fail over settings they do not need', async () => {
    const folder = await handlerFolder();
    try {
      await writeFile(path.join(folder.config, '0.settings'), '{not json');
      const extension = fakeExtension(succeed);
      const { deps } = dependencies(folder.handlerDir, extension);
      assert.equal((await runCommand('disable', deps)).exitCode, 0);
      assert.equal((await runCommand('uninstall', deps)).exitCode, 0);
      assert.deepEqual(extension.calls, ['disable', 'uninstall']);
    } finally {
      await folder.cleanup();
    }
  });

  test('decrypted protected settings never reach the status or the log', async () => {
    const folder = await handlerFolder();
    try {
      await writeFile(path.join(folder.lib, `${THUMBPRINT}.crt`), 'c');
      await writeFile(path.join(folder.lib, `${THUMBPRINT}.prv`), 'k');
      await folder.settings(0, {}, Buffer.from('encrypted').toString('base64'));
      const extension = fakeExtension(async () => {
        throw new Error('the server refused password hunter2-secret');
      });
      const { deps, log } = dependencies(folder.handlerDir, extension, {
        processes: fakeProcesses(() => ({ stdout: '{"password":"hunter2-secret"}' })),
      });
      const result = await runCommand('enable', deps);
      assert.equal(result.exitCode, 70);
      assert.doesNotMatch(result.message, /hunter2-secret/);
      assert.doesNotMatch(JSON.stringify(await folder.readStatus(0)), /hunter2-secret/);
      assert.ok(log.secrets.has('hunter2-secret'));
    } finally {
      await folder.cleanup();
    }
  });

  test("update hands the installation to the new version; the old version's uninstall leaves it", async () => {
    const folder = await handlerFolder('1.0.0.0');
    try {
      const extension = fakeExtension(succeed);
      const old = dependencies(folder.handlerDir, extension);
      assert.equal((await runCommand('install', old.deps)).exitCode, 0);
      const update = dependencies(folder.handlerDir, extension, {
        version: '1.0.0.1',
        env: {
          ConfigSequenceNumber: '1',
          VERSION: '1.0.0.1',
          AZURE_GUEST_AGENT_UPDATING_FROM_VERSION: '1.0.0.0',
        },
      });
      assert.equal((await runCommand('update', update.deps)).exitCode, 0);
      assert.equal((await folder.readState()).owner, '1.0.0.1');
      old.deps.env = { ConfigSequenceNumber: '1' };
      const uninstall = await runCommand('uninstall', old.deps);
      assert.equal(uninstall.exitCode, 0);
      assert.match(uninstall.message, /left the installation in place for version 1\.0\.0\.1/);
      assert.deepEqual(extension.calls, ['install', 'update']);
      assert.equal((await folder.readState()).owner, '1.0.0.1');
    } finally {
      await folder.cleanup();
    }
  });

  test('a missing HandlerEnvironment.json fails with 60 and still writes status where the agent looks', async () => {
    const folder = await handlerFolder();
    try {
      await writeFile(path.join(folder.handlerDir, 'HandlerEnvironment.json'), '[{"version": 1.0');
      const { deps } = dependencies(folder.handlerDir, fakeExtension(succeed), {
        env: { ConfigSequenceNumber: '5' },
      });
      const result = await runCommand('enable', deps);
      assert.equal(result.exitCode, 60);
      const status = await folder.readStatus(5);
      assert.equal(status?.code, 60);
      assert.match(
        status?.formattedMessage?.message ?? '',
        /HandlerEnvironment\.json: it is not valid JSON/,
      );
    } finally {
      await folder.cleanup();
    }
  });

  test('a status folder that cannot be written gives code 64 and says why', async () => {
    const folder = await handlerFolder();
    try {
      await writeFile(path.join(folder.handlerDir, 'not-a-folder'), '');
      await writeFile(
        path.join(folder.handlerDir, 'HandlerEnvironment.json'),
        JSON.stringify([
          {
            version: 1.0,
            handlerEnvironment: {
              logFolder: path.join(folder.lib, 'log'),
              configFolder: folder.config,
              statusFolder: path.join(folder.handlerDir, 'not-a-folder', 'status'),
            },
          },
        ]),
      );
      const warnings: string[] = [];
      const { deps } = dependencies(folder.handlerDir, fakeExtension(succeed), {
        warn: (message) => warnings.push(message),
      });
      const result = await runCommand('disable', deps);
      assert.equal(result.exitCode, 64);
      assert.match(warnings.join('\n'), /Cannot write the status file/);
      assert.match(
        result.message,
        /^Cannot write the status file .*not-a-folder\/status\/0\.status: .* Disable succeeded: disable done, but its status could not be written\. Free space/,
      );
    } finally {
      await folder.cleanup();
    }
  });

  test('a command whose progress cannot be reported stops with 64 before its work, saying why once', async () => {
    const folder = await handlerFolder();
    try {
      await folder.settings(0, {});
      await writeFile(path.join(folder.handlerDir, 'not-a-folder'), '');
      await writeFile(
        path.join(folder.handlerDir, 'HandlerEnvironment.json'),
        JSON.stringify([
          {
            version: 1.0,
            handlerEnvironment: {
              logFolder: path.join(folder.lib, 'log'),
              configFolder: folder.config,
              statusFolder: path.join(folder.handlerDir, 'not-a-folder', 'status'),
            },
          },
        ]),
      );
      const warnings: string[] = [];
      const extension = fakeExtension(succeed);
      const { deps } = dependencies(folder.handlerDir, extension, {
        warn: (message) => warnings.push(message),
      });
      const result = await runCommand('enable', deps);
      assert.equal(result.exitCode, 64);
      assert.deepEqual(extension.calls, [], 'the work never started');
      assert.equal(warnings.length, 1, warnings.join('\n'));
      assert.match(
        result.message,
        /^Enable failed: Cannot write the status file .*\/0\.status: .* The command stopped before changing anything\. Free space \(and inodes\) on the file system holding the named folder/,
      );
    } finally {
      await folder.cleanup();
    }
  });

  // Claim: a state change that changes nothing writes nothing (a converged enable used to write
  // state.json three times); a real change is written at once.
  test('saveState writes the state only when the change changes it', async () => {
    const folder = await handlerFolder();
    const stateFile = path.join(stateFolder(folder.handlerDir, NAME), 'state.json');
    const exists = () =>
      readFile(stateFile).then(
        () => true,
        () => false,
      );
    try {
      await folder.settings(0, {});
      const seen: boolean[] = [];
      const base = fakeExtension(succeed);
      const extension: Extension<{ mirror?: string }> = {
        ...base,
        run: {
          ...base.run,
          enable: async (context) => {
            await context.saveState((latest) => latest);
            await context.saveState((latest) => ({ ...latest, journal: [...latest.journal] }));
            seen.push(await exists());
            await context.saveState((latest) => ({ ...latest, owner: 'someone' }));
            seen.push(await exists());
            return { status: 'success', message: 'enable done.' };
          },
        },
      };
      const { deps } = dependencies(folder.handlerDir, extension);
      assert.equal((await runCommand('enable', deps)).exitCode, 0);
      assert.deepEqual(seen, [false, true]);
    } finally {
      await folder.cleanup();
    }
  });
});

describe('install --dry-run and enable --dry-run', () => {
  /** What a dry run may not leave behind: files in the status folder, a state folder, a log. */
  async function written(folder: Awaited<ReturnType<typeof handlerFolder>>) {
    return {
      status: await readdir(folder.status),
      state: await readdir(stateFolder(folder.handlerDir, NAME)).catch(() => 'absent'),
      log: await readdir(path.join(folder.lib, 'log')).catch(() => 'absent'),
    };
  }
  const nothingWritten = { status: [], state: 'absent', log: 'absent' };

  test('prints the plan from the settings, runs no operation and writes nothing', async () => {
    const folder = await handlerFolder();
    try {
      await folder.settings(0, { mirror: 'https://m' });
      const extension = {
        ...fakeExtension(succeed),
        dryRun: async (context: DryRunContext<{ mirror?: string }>) => [
          `would use ${context.settings.mirror} for ${context.operation.verb}`,
        ],
      };
      const { deps } = dependencies(folder.handlerDir, extension, {
        createLog: () => assert.fail('a dry run opens no log file'),
      });
      const result = await runDryRun('enable', deps);
      assert.equal(result.exitCode, 0);
      assert.match(result.message, /^Enable --dry-run: nothing was changed\./);
      assert.match(result.message, /^would use https:\/\/m for enable$/m);
      assert.deepEqual(extension.calls, []);
      assert.deepEqual(await written(folder), nothingWritten);
    } finally {
      await folder.cleanup();
    }
  });

  test('a failure: its catalogue code and message, and still nothing written', async () => {
    const folder = await handlerFolder();
    try {
      await folder.settings(0, {});
      const extension = {
        ...fakeExtension(succeed),
        dryRun: async () => {
          throw new HandlerFailure('untrustedRepositoryKey', 'Only key ABCD is offered.');
        },
      };
      const result = await runDryRun('install', dependencies(folder.handlerDir, extension).deps);
      assert.equal(result.exitCode, 27);
      assert.match(result.message, /^Install --dry-run failed \(exit 27\); nothing was changed\./);
      assert.match(result.message, /Only key ABCD is offered\./);
      assert.deepEqual(await written(folder), nothingWritten);
    } finally {
      await folder.cleanup();
    }
  });

  test('only install and enable of an extension that has a dry run: otherwise exit 2', async () => {
    const folder = await handlerFolder();
    try {
      await folder.settings(0, {});
      const withDryRun = { ...fakeExtension(succeed), dryRun: async () => [] };
      const disable = await runDryRun('disable', dependencies(folder.handlerDir, withDryRun).deps);
      assert.equal(disable.exitCode, 2);
      assert.match(disable.message, /--dry-run is for install and enable/);
      const without = await runDryRun(
        'install',
        dependencies(folder.handlerDir, fakeExtension(succeed)).deps,
      );
      assert.equal(without.exitCode, 2);
      assert.deepEqual(await written(folder), nothingWritten);
    } finally {
      await folder.cleanup();
    }
  });
});
