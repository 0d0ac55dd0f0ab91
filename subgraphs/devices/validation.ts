import { z } from 'zod';

export { check, checkId, checkIds } from '../../lib/validation.js';

import { API_SCOPES } from '../../lib/auth.js';
import { isUuid } from '../../lib/db.js';
import { BadInputError } from '../../lib/errors.js';
import { canonicalTimeZone } from '../../lib/time-zones.js';

/** Pure input rules of the devices subgraph; every failure is a BAD_USER_INPUT naming the field. */

export const MAX_PAGE = 200;
export const MAX_RADIUS_M = 1_000_000;

const name = z.string().trim().min(1, 'must not be empty').max(200, 'must be at most 200 characters');
const serial = z.string().regex(/^[A-Za-z0-9._:-]{1,128}$/, 'must be 1-128 characters of A-Z a-z 0-9 . _ : -');
const latitude = z.number().min(-90, 'latitude must be between -90 and 90').max(90, 'latitude must be between -90 and 90');
const longitude = z.number().min(-180, 'longitude must be between -180 and 180').max(180, 'longitude must be between -180 and 180');
const location = z.object({ lat: latitude, lng: longitude });
const uuid = z.string().refine(isUuid, 'must be a uuid');
const attributes = z.record(z.string(), z.unknown(), 'must be a JSON object');

/** A latitude/longitude rectangle (`minLng > maxLng` crosses the antimeridian). */
export const bboxSchema = z
  .object({ minLat: latitude, minLng: longitude, maxLat: latitude, maxLng: longitude })
  .refine((b) => b.minLat <= b.maxLat, 'minLat must not exceed maxLat');

export const deviceFilterSchema = z
  .object({
    siteId: uuid.nullish(),
    profileId: uuid.nullish(),
    parentId: uuid.nullish(),
    search: z.string().trim().max(200, 'must be at most 200 characters').nullish(),
    bbox: bboxSchema.nullish(),
    near: z
      .object({
        lat: latitude,
        lng: longitude,
        radiusMeters: z.number().gt(0, 'radiusMeters must be greater than 0').max(MAX_RADIUS_M, 'radiusMeters must be at most 1000 km'),
      })
      .nullish(),
    includeDecommissioned: z.boolean().nullish(),
  })
  .nullish();

/** `devicesInBox` (the console's map): pages up to this size. */
export const MAX_MAP_PAGE = 1000;
export const mapPageSchema = z.object({
  first: z
    .number()
    .int()
    .min(1, `first must be between 1 and ${MAX_MAP_PAGE}`)
    .max(MAX_MAP_PAGE, `first must be between 1 and ${MAX_MAP_PAGE}`),
  after: z.string().max(1000).nullish(),
});

export const pageSchema = z.object({
  first: z.number().int().min(1, `first must be between 1 and ${MAX_PAGE}`).max(MAX_PAGE, `first must be between 1 and ${MAX_PAGE}`),
  after: z.string().max(1000).nullish(),
});

const timeZone = z.string().transform((v, ctx) => {
  const zone = canonicalTimeZone(v);
  if (!zone) {
    ctx.addIssue({ code: 'custom', message: 'not an IANA time zone (e.g. Europe/Amsterdam)' });
    return z.NEVER;
  }
  return zone;
});
export const createSiteSchema = z.object({ name, parentId: uuid.nullish(), timeZone: timeZone.nullish(), location: location.nullish() });
/** `updateSite`: absent keeps, null clears (`timeZone`, `location`); the name cannot be cleared. */
export const updateSiteSchema = z.object({ name: name.optional(), timeZone: timeZone.nullish(), location: location.nullish() });

const metricName = z.string().regex(/^[A-Za-z][A-Za-z0-9_.-]{0,63}$/, 'must start with a letter: up to 64 of A-Z a-z 0-9 _ . -');
export const createProfileSchema = z.object({
  name,
  description: z.string().max(2000).nullish(),
  metrics: z
    .array(
      z
        .object({
          name: metricName,
          unit: z.string().max(32).nullish(),
          type: z.enum(['number', 'boolean', 'string']),
          min: z.number().nullish(),
          max: z.number().nullish(),
          counter: z.boolean().nullish(),
        })
        .refine((m) => m.min == null || m.max == null || m.min <= m.max, 'min must not exceed max')
        .refine((m) => !m.counter || m.type === 'number', 'only NUMBER metrics can be counters'),
    )
    .max(200)
    .refine((ms) => new Set(ms.map((m) => m.name)).size === ms.length, 'metric names must be unique')
    .nullish(),
  silenceTimeoutSeconds: z
    .number()
    .int()
    .min(1)
    .max(30 * 86_400)
    .nullish(),
  isGateway: z.boolean().nullish(),
  autoCreateChildren: z.boolean().nullish(),
});

/** The fields of {@link createProfileSchema}, each optional (null leaves a field as it is; `name` may not be null). */
export const updateProfileSchema = createProfileSchema.partial();

export const createDeviceSchema = z.object({
  serial,
  name,
  siteId: uuid.nullish(),
  profileId: uuid.nullish(),
  parentId: uuid.nullish(),
  location: location.nullish(),
  attributes: attributes.nullish(),
});

export const updateDeviceSchema = z.object({
  name: name.optional(),
  siteId: uuid.nullish(),
  profileId: uuid.nullish(),
  location: location.nullish(),
  attributes: attributes.optional(),
});

export const createApiKeySchema = z.object({
  name,
  scopes: z
    .array(z.enum(API_SCOPES, { error: (i) => `unknown scope ${JSON.stringify(i.input)} (known: ${API_SCOPES.join(', ')})` }))
    .min(1, 'at least one scope is required'),
  expiresAt: z
    .date()
    .refine((d) => d.getTime() > Date.now(), 'must be in the future')
    .nullish(),
});

/** `rotateDeviceCredentials(graceSeconds:)`: 0 (revoke the old secrets now) to 30 days. */
export const graceSchema = z
  .number()
  .int()
  .min(0, 'graceSeconds must be between 0 and 2592000')
  .max(2_592_000, 'graceSeconds must be between 0 and 2592000')
  .nullish();

/** `registerDeviceCertificate`: a fingerprint or a PEM certificate, exactly one of them. */
export const certificateSchema = z
  .object({
    deviceId: uuid,
    fingerprint: z.string().max(200).nullish(),
    certificate: z.string().max(16_384).nullish(),
  })
  .refine((a) => (a.fingerprint == null) !== (a.certificate == null), 'give either fingerprint or certificate');

export const provisionModeSchema = z.enum(['disabled', 'pre_registered', 'create_new']);

export const loginSchema = z.object({
  email: z.string().trim().min(3).max(320),
  password: z.string().min(1).max(1024),
  organization: z.string().trim().max(63).nullish(),
});

/** Keyset cursors are opaque to clients: base64url of `s:<serial>`. */
export const encodeCursor = (serial: string) => Buffer.from(`s:${serial}`).toString('base64url');
export function decodeCursor(cursor: string): string {
  const raw = /^[A-Za-z0-9_-]+$/.test(cursor) ? Buffer.from(cursor, 'base64url').toString('utf8') : '';
  if (!raw.startsWith('s:') || !serial.safeParse(raw.slice(2)).success) {
    throw new BadInputError('after: not a cursor returned by this API', { field: 'after' });
  }
  return raw.slice(2);
}

// --- people and sessions

/** Shortest password a person may set (NIST SP 800-63B: length over composition rules). */
export const MIN_PASSWORD = 10;

const email = z
  .string()
  .trim()
  .max(320, 'must be at most 320 characters')
  .regex(/^[^@\s]+@[^@\s]+\.[^@\s]+$/, 'must be an e-mail address');
const password = z.string().min(1, 'must not be empty').max(1024, 'must be at most 1024 characters');
const newPassword = z
  .string()
  .min(MIN_PASSWORD, `must be at least ${MIN_PASSWORD} characters`)
  .max(1024, 'must be at most 1024 characters');
const token = z.string().min(1).max(200);
const role = z.enum(['admin', 'operator', 'viewer']);

export const inviteSchema = z.object({ email, role });
export const acceptInvitationSchema = z.object({
  token,
  password,
  name: z.string().trim().max(200, 'must be at most 200 characters').nullish(),
});
export const newPasswordSchema = newPassword;
export const changePasswordSchema = z.object({ currentPassword: password, newPassword });
export const resetPasswordSchema = z.object({ token, newPassword });
export const requestResetSchema = z.object({ email });
export const refreshSchema = z.object({ refreshToken: token });
export const logoutSchema = z.object({ refreshToken: token.nullish() });
export const tokenSchema = z.object({ token });
export const changeRoleSchema = z.object({ role });
export const switchSchema = z.object({ organization: z.string().trim().min(1).max(63) });
export const createOrganizationSchema = z.object({
  slug: z.string().regex(/^[a-z0-9][a-z0-9-]{1,62}$/, 'must be 2-63 of a-z 0-9 - (starting with a letter or digit)'),
  name,
  adminEmail: email,
});
