import { promises as fs } from 'node:fs';
import path from 'node:path';
import { HandlerFailure } from '../failures.js';
import type { Processes } from '../io/processes.js';
import type { EncryptedSettings } from './settings.js';

export interface DecryptOptions {
  /** The agent's folder holding `<THUMBPRINT>.crt` and `.prv` (its `Lib.Dir`). */
  certificateFolder: string;
  processes: Processes;
  signal?: AbortSignal;
}

/**
 * Decrypts protected settings the way the agent's own handlers do: `openssl cms -decrypt -inform
 * DER` with the certificate and key the agent stored under its thumbprint, falling back to `openssl
 * smime` where `cms` is missing. The result is an object; callers must register every value in it
 * as a secret before logging anything. Failure messages never contain decrypted data.
 */
export async function decryptProtectedSettings(
  encrypted: EncryptedSettings,
  { certificateFolder, processes, signal }: DecryptOptions,
): Promise<Record<string, unknown>> {
  const thumbprint = encrypted.thumbprint.toUpperCase();
  if (!/^[0-9A-F]{40}$/.test(thumbprint)) {
    throw new HandlerFailure(
      'protectedSettingsUnreadable',
      `protectedSettingsCertThumbprint is not a 40-digit hexadecimal thumbprint.`,
    );
  }
  const certificate = path.join(certificateFolder, `${thumbprint}.crt`);
  const key = path.join(certificateFolder, `${thumbprint}.prv`);
  for (const file of [certificate, key]) {
    const exists = await fs.stat(file).then(
      (stat) => stat.isFile(),
      () => false,
    );
    if (!exists) {
      throw new HandlerFailure('protectedSettingsUnreadable', `${file} does not exist.`);
    }
  }
  const der = Buffer.from(encrypted.data.replace(/\s+/g, ''), 'base64');
  if (der.length === 0) {
    throw new HandlerFailure('protectedSettingsUnreadable', 'protectedSettings is not base64.');
  }
  let problem = '';
  for (const command of ['cms', 'smime']) {
    const result = await processes.run(
      'openssl',
      [command, '-decrypt', '-inform', 'DER', '-recip', certificate, '-inkey', key],
      { input: der, ...(signal ? { signal } : {}) },
    );
    if (result.exitCode === 0) return parseDecrypted(result.stdout);
    problem =
      result.exitCode === 127
        ? 'openssl is not installed'
        : `openssl ${command} exited with ${result.exitCode}: ${firstLine(result.stderr)}`;
  }
  throw new HandlerFailure(
    'protectedSettingsUnreadable',
    `Decrypting with certificate ${thumbprint} failed (${problem}).`,
  );
}

function parseDecrypted(text: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new HandlerFailure(
      'protectedSettingsUnreadable',
      'The decrypted protected settings are not JSON.',
    );
  }
  if (value === null) return {};
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw new HandlerFailure(
      'protectedSettingsUnreadable',
      'The decrypted protected settings are not a JSON object.',
    );
  }
  return value as Record<string, unknown>;
}

function firstLine(text: string): string {
  return (
    text
      .split('\n')
      .find((line) => line.trim())
      ?.trim()
      .slice(0, 200) ?? 'no error output'
  );
}

/** Every string value inside decrypted settings: what the log must never show. */
export function secretValues(value: unknown): string[] {
  if (typeof value === 'string') return [value];
  if (typeof value === 'number' || typeof value === 'boolean') return [String(value)];
  if (Array.isArray(value)) return value.flatMap(secretValues);
  if (value && typeof value === 'object') return Object.values(value).flatMap(secretValues);
  return [];
}
