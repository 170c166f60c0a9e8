import path from 'node:path';
import { HandlerFailure } from '../failures.js';
import { errorMessage, readTextIfExists } from '../io/files.js';
import { z } from '../io/zod.js';

/** One `config/<seq>.settings` file as the agent writes it (all three keys, `null` when unset). */
const settingsFileSchema = z.object({
  runtimeSettings: z
    .array(
      z.object({
        handlerSettings: z
          .object({
            publicSettings: z.record(z.string(), z.unknown()).nullish(),
            protectedSettings: z.string().nullish(),
            protectedSettingsCertThumbprint: z.string().nullish(),
          })
          .nullish(),
      }),
    )
    .max(1),
});

export interface EncryptedSettings {
  /** Base64 of a DER PKCS#7 EnvelopedData. */
  data: string;
  thumbprint: string;
}

export interface HandlerSettings {
  /** Where they came from, for the log; `undefined` when there is no settings file. */
  file: string | undefined;
  publicSettings: Record<string, unknown>;
  protectedSettings: EncryptedSettings | undefined;
}

const NO_SETTINGS = { publicSettings: {}, protectedSettings: undefined } as const;

/**
 * Reads `config/<seq>.settings`. A missing file, a 0-byte file (the agent's "no settings"), and
 * `null` settings all mean "no settings". A file that is not what the agent writes fails with
 * `invalidSettings`, naming the file and the problem. Protected settings stay encrypted here.
 */
export async function readSettings(
  configFolder: string,
  sequenceNumber: number,
): Promise<HandlerSettings> {
  const file = path.join(configFolder, `${sequenceNumber}.settings`);
  let text: string | undefined;
  try {
    text = await readTextIfExists(file);
  } catch (error) {
    throw new HandlerFailure('invalidSettings', `Cannot read ${file}: ${errorMessage(error)}.`);
  }
  if (text === undefined) return { file: undefined, ...NO_SETTINGS };
  if (text.replace(/^\uFEFF/, '').trim() === '') return { file, ...NO_SETTINGS };
  let json: unknown;
  try {
    json = JSON.parse(text.replace(/^\uFEFF/, ''));
  } catch (error) {
    throw new HandlerFailure(
      'invalidSettings',
      `${file} is not valid JSON (${errorMessage(error)}).`,
    );
  }
  const parsed = settingsFileSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new HandlerFailure(
      'invalidSettings',
      `${file} is not a settings file the guest agent writes: ${issue?.path.join('.') || 'top level'}: ${issue?.message}.`,
    );
  }
  const handlerSettings = parsed.data.runtimeSettings[0]?.handlerSettings;
  if (!handlerSettings) return { file, ...NO_SETTINGS };
  const data = handlerSettings.protectedSettings?.trim();
  const thumbprint = handlerSettings.protectedSettingsCertThumbprint?.trim();
  if (data && !thumbprint) {
    throw new HandlerFailure(
      'protectedSettingsUnreadable',
      `${file} has protectedSettings but no protectedSettingsCertThumbprint.`,
    );
  }
  return {
    file,
    publicSettings: handlerSettings.publicSettings ?? {},
    protectedSettings: data && thumbprint ? { data, thumbprint } : undefined,
  };
}
