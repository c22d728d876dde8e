// The AWS clients, built from the standard credential chain and region (env, profile, SSO, instance
// role), and checked up front so a missing region or credentials is one plain sentence, not a stack
// trace from deep inside the first request.
import { EC2Client } from '@aws-sdk/client-ec2';
import { Route53Client } from '@aws-sdk/client-route-53';

export class AwsSetupError extends Error {
  override name = 'AwsSetupError';
}

export interface Clients {
  ec2: EC2Client;
  route53: Route53Client;
}

export function makeClients(region?: string): Clients {
  // The SDK warns on every run that future releases will need Node 22: noise for an operator whose
  // command works; the pinned SDK version is what we run.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const config = { ...(region && { region }), maxAttempts: 1 };
  return { ec2: new EC2Client(config), route53: new Route53Client(config) };
}

/** Resolves region and credentials once; both are cached by the SDK afterwards. */
export async function checkAwsSetup(client: EC2Client | Route53Client): Promise<string> {
  let region: string;
  try {
    region = await client.config.region();
  } catch {
    throw new AwsSetupError('no AWS region: set AWS_REGION (or a region in your AWS profile) or pass --region');
  }
  try {
    await client.config.credentials();
  } catch (err) {
    throw new AwsSetupError(
      `no AWS credentials: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run with an instance role (${(err as Error).message.split('\n')[0]})`,
    );
  }
  return region;
}
