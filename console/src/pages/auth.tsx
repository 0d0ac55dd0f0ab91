import { useEffect, useState } from 'preact/hooks';
import { acceptInvitation, gql, signIn } from '../api.js';
import { errorText } from '../format.js';
import { dropQuery, navigate, route } from '../router.js';

const value = (e: Event) => (e.target as HTMLInputElement).value;

function Card({ title, children }: { title: string; children: preact.ComponentChildren }) {
  return (
    <main class="auth" id="main">
      <h1>{title}</h1>
      {children}
    </main>
  );
}

export function SignInPage() {
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [organization, setOrganization] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  return (
    <Card title="Sign in to RULR">
      <form
        aria-label="Sign in"
        onSubmit={(e) => {
          e.preventDefault();
          setBusy(true);
          setError(null);
          signIn(email.trim(), password, organization.trim() || undefined)
            .then(() => {
              if (route.value.path === '/' || route.value.path === '/signin') navigate('/map');
            })
            .catch((err: unknown) => setError(errorText(err)))
            .finally(() => setBusy(false));
        }}
      >
        <label>
          E-mail
          <input type="email" name="email" autocomplete="username" required value={email} onInput={(e) => setEmail(value(e))} />
        </label>
        <label>
          Password
          <input
            type="password"
            name="password"
            autocomplete="current-password"
            required
            value={password}
            onInput={(e) => setPassword(value(e))}
          />
        </label>
        <label>
          Organization (optional)
          <input name="organization" placeholder="slug" value={organization} onInput={(e) => setOrganization(value(e))} />
        </label>
        {error && (
          <p role="alert" class="error">
            {error}
          </p>
        )}
        <button type="submit" disabled={busy}>
          Sign in
        </button>
      </form>
      <p>
        <a href="#/forgot-password">Forgot your password?</a>
      </p>
    </Card>
  );
}

/** Reads `?token=` once and takes it out of the address bar (lib/contracts/console-links.ts). */
function useLinkToken(): string {
  const [token] = useState(() => route.value.params.get('token') ?? '');
  useEffect(() => {
    if (route.value.params.has('token')) dropQuery();
  }, []);
  return token;
}

interface Preview {
  email: string;
  role: string;
  organization: { name: string; slug: string };
  expiresAt: string;
  accountExists: boolean;
}

export function AcceptInvitationPage() {
  const token = useLinkToken();
  const [preview, setPreview] = useState<Preview | null>(null);
  const [error, setError] = useState<string | null>(token ? null : 'This link has no invitation token.');
  const [password, setPassword] = useState('');
  const [name, setName] = useState('');
  useEffect(() => {
    if (!token) return;
    gql<{ invitation: Preview | null }>(
      'query Inv($t: String!) { invitation(token: $t) { email role organization { name slug } expiresAt accountExists } }',
      { t: token },
    )
      .then((d) => (d.invitation ? setPreview(d.invitation) : setError('This invitation is not valid any more.')))
      .catch((e: unknown) => setError(errorText(e)));
  }, [token]);
  return (
    <Card title="Accept invitation">
      {preview && (
        <p data-testid="invitation-preview">
          {preview.email} is invited to <strong>{preview.organization.name}</strong> as {preview.role.toLowerCase()}.
        </p>
      )}
      {preview && (
        <form
          aria-label="Accept invitation"
          onSubmit={(e) => {
            e.preventDefault();
            setError(null);
            acceptInvitation(token, password, name.trim() || undefined)
              .then(() => navigate('/map'))
              .catch((err: unknown) => setError(errorText(err)));
          }}
        >
          {!preview.accountExists && (
            <label>
              Your name
              <input name="name" autocomplete="name" value={name} onInput={(e) => setName(value(e))} />
            </label>
          )}
          <label>
            {preview.accountExists ? 'Your password' : 'Choose a password'}
            <input
              type="password"
              name="password"
              required
              autocomplete={preview.accountExists ? 'current-password' : 'new-password'}
              value={password}
              onInput={(e) => setPassword(value(e))}
            />
          </label>
          <button type="submit">Accept and sign in</button>
        </form>
      )}
      {error && (
        <p role="alert" class="error">
          {error}
        </p>
      )}
      <p>
        <a href="#/">Back to sign in</a>
      </p>
    </Card>
  );
}

export function ResetPasswordPage() {
  const token = useLinkToken();
  const [password, setPassword] = useState('');
  const [done, setDone] = useState(false);
  const [error, setError] = useState<string | null>(token ? null : 'This link has no reset token.');
  return (
    <Card title="Choose a new password">
      {done ? (
        <p role="status">
          Your password is changed. <a href="#/">Sign in</a>
        </p>
      ) : (
        token && (
          <form
            aria-label="Reset password"
            onSubmit={(e) => {
              e.preventDefault();
              setError(null);
              gql<{ resetPassword: boolean }>('mutation Reset($t: String!, $p: String!) { resetPassword(token: $t, newPassword: $p) }', {
                t: token,
                p: password,
              })
                .then(() => setDone(true))
                .catch((err: unknown) => setError(errorText(err)));
            }}
          >
            <label>
              New password
              <input
                type="password"
                name="password"
                required
                autocomplete="new-password"
                value={password}
                onInput={(e) => setPassword(value(e))}
              />
            </label>
            <button type="submit">Set password</button>
          </form>
        )
      )}
      {error && (
        <p role="alert" class="error">
          {error}
        </p>
      )}
    </Card>
  );
}

export function ForgotPasswordPage() {
  const [email, setEmail] = useState('');
  const [sent, setSent] = useState(false);
  const [error, setError] = useState<string | null>(null);
  return (
    <Card title="Reset your password">
      {sent ? (
        <p role="status">If {email} has an account, a reset link is on its way.</p>
      ) : (
        <form
          aria-label="Request password reset"
          onSubmit={(e) => {
            e.preventDefault();
            gql('mutation Forgot($e: String!) { requestPasswordReset(email: $e) }', { e: email.trim() })
              .then(() => setSent(true))
              .catch((err: unknown) => setError(errorText(err)));
          }}
        >
          <label>
            E-mail
            <input type="email" name="email" required value={email} onInput={(e) => setEmail(value(e))} />
          </label>
          <button type="submit">Send reset link</button>
        </form>
      )}
      {error && (
        <p role="alert" class="error">
          {error}
        </p>
      )}
      <p>
        <a href="#/">Back to sign in</a>
      </p>
    </Card>
  );
}
