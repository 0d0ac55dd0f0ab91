import type { Db } from '../../../lib/db.js';
import { ApiKeyRepository } from './api-keys.js';
import { type CredentialOptions, CredentialRepository } from './credentials.js';
import { DeviceRepository } from './devices.js';
import { InvitationRepository } from './invitations.js';
import { OrganizationRepository } from './organizations.js';
import { PasswordResetRepository } from './password-resets.js';
import { ProfileRepository } from './profiles.js';
import { SiteRepository } from './sites.js';
import { UserRepository } from './users.js';

export { ApiKeyRepository } from './api-keys.js';
export { type CredentialOptions, CredentialRepository, type CredentialRow } from './credentials.js';
export {
  type DeviceColumn,
  type DeviceListFilter,
  type DevicePage,
  type DevicePatch,
  DeviceRepository,
  type ListDevicesOptions,
  type NewDevice,
} from './devices.js';
export { type Accepted, InvitationRepository, type InvitationRow } from './invitations.js';
export { OrganizationRepository } from './organizations.js';
export { PasswordResetRepository } from './password-resets.js';
export { type NewProfile, ProfileRepository } from './profiles.js';
export { type IssuedSession, parseRefreshToken, type RotateResult, type SessionSettings, SessionStore } from './sessions.js';
export type { ApiKeyRow, DeviceRow, MetricDefinitionRow, OrganizationRow, ProfileRow, SiteRow } from './shared.js';
export { SiteRepository } from './sites.js';
export { PeopleThrottles, type ThrottleSettings } from './throttles.js';
export { type MemberRow, UserRepository, type UserRow } from './users.js';

/** The devices subgraph's SQL, one repository per aggregate. */
export interface DevicesRepositories {
  devices: DeviceRepository;
  sites: SiteRepository;
  profiles: ProfileRepository;
  credentials: CredentialRepository;
  apiKeys: ApiKeyRepository;
  organizations: OrganizationRepository;
  /** people and their memberships */
  users: UserRepository;
  invitations: InvitationRepository;
  passwordResets: PasswordResetRepository;
}

/** Every repository over one database; `overrides` replace some (bench:gateway's in-memory reads). */
export function createRepositories(
  db: Db,
  overrides: Partial<DevicesRepositories> = {},
  credentials: CredentialOptions = {},
): DevicesRepositories {
  return {
    devices: new DeviceRepository(db),
    sites: new SiteRepository(db),
    profiles: new ProfileRepository(db),
    credentials: new CredentialRepository(db, credentials),
    apiKeys: new ApiKeyRepository(db),
    organizations: new OrganizationRepository(db),
    users: new UserRepository(db),
    invitations: new InvitationRepository(db),
    passwordResets: new PasswordResetRepository(db),
    ...overrides,
  };
}
