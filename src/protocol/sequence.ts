import { readdirSync, type Stats, statSync } from 'node:fs';
import path from 'node:path';
import { isNotFound } from '../io/files.js';

export interface SequenceNumber {
  value: number;
  /** Where it came from, for the log. */
  source: 'ConfigSequenceNumber' | 'newest settings file' | 'default';
}

const SETTINGS_FILE = /^(\d+)\.settings$/;

/**
 * The sequence number this command works for: `ConfigSequenceNumber` from the agent, else the
 * most recently modified `config/<n>.settings` (the agent's own fallback: numbers are not
 * guaranteed to increase), else 0.
 */
export async function resolveSequenceNumber(
  env: Readonly<Record<string, string | undefined>>,
  configFolder: string,
): Promise<SequenceNumber> {
  const fromAgent = env.ConfigSequenceNumber?.trim();
  if (fromAgent && /^\d+$/.test(fromAgent)) {
    return { value: Number(fromAgent), source: 'ConfigSequenceNumber' };
  }
  let names: string[];
  try {
    names = readdirSync(configFolder);
  } catch (error) {
    if (isNotFound(error)) return { value: 0, source: 'default' };
    throw error;
  }
  let newest: { value: number; mtimeMs: number } | undefined;
  for (const name of names) {
    const match = SETTINGS_FILE.exec(name);
    if (!match) continue;
    const stat = statOrUndefined(path.join(configFolder, name));
    if (!stat?.isFile()) continue;
    const value = Number(match[1]);
    if (
      !newest ||
      stat.mtimeMs > newest.mtimeMs ||
      (stat.mtimeMs === newest.mtimeMs && value > newest.value)
    ) {
      newest = { value, mtimeMs: stat.mtimeMs };
    }
  }
  return newest
    ? { value: newest.value, source: 'newest settings file' }
    : { value: 0, source: 'default' };
}

function statOrUndefined(file: string): Stats | undefined {
  try {
    return statSync(file);
  } catch {
    return undefined;
  }
}
