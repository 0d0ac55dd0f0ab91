import { consoleLink } from '../../lib/contracts/console-links.js';
import type { MailMessage } from '../../lib/mail.js';

const esc = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const hours = (ms: number) => Math.max(1, Math.round(ms / 3_600_000));

/** The invitation mail: who invites into which organization with which role, and the link. */
export function invitationMail(o: {
  to: string;
  organization: string;
  role: string;
  consoleUrl: string;
  token: string;
  expiresAt: Date;
}): MailMessage {
  const link = consoleLink(o.consoleUrl, 'accept-invitation', o.token);
  const until = o.expiresAt.toISOString().slice(0, 16).replace('T', ' ');
  return {
    to: o.to,
    subject: `You are invited to ${o.organization} on RULR`,
    text: [
      `You are invited to join ${o.organization} on RULR as ${o.role}.`,
      '',
      `Accept the invitation: ${link}`,
      '',
      `The link works once, until ${until} UTC. If you did not expect it, ignore this mail.`,
    ].join('\n'),
    html: `<p>You are invited to join <b>${esc(o.organization)}</b> on RULR as ${esc(o.role)}.</p><p><a href="${esc(link)}">Accept the invitation</a></p><p>The link works once, until ${until} UTC. If you did not expect it, ignore this mail.</p>`,
  };
}

/** The password-reset mail. */
export function passwordResetMail(o: { to: string; consoleUrl: string; token: string; ttlMs: number }): MailMessage {
  const link = consoleLink(o.consoleUrl, 'reset-password', o.token);
  const h = hours(o.ttlMs);
  return {
    to: o.to,
    subject: 'Reset your RULR password',
    text: [
      'Someone asked to reset the password of your RULR account.',
      '',
      `Choose a new password: ${link}`,
      '',
      `The link works once, for ${h} hour${h === 1 ? '' : 's'}. If it was not you, ignore this mail: your password stays as it is.`,
    ].join('\n'),
    html: `<p>Someone asked to reset the password of your RULR account.</p><p><a href="${esc(link)}">Choose a new password</a></p><p>The link works once, for ${h} hour${h === 1 ? '' : 's'}. If it was not you, ignore this mail: your password stays as it is.</p>`,
  };
}
