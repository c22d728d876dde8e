// The metal server's own wire encoding of big A answers must be exactly what dns2 would have sent.
import t from 'tap';
import fc from 'fast-check';
import DNS from 'dns2';
import { answerQuery, encodeResponse, fastAnswer, type Zone } from '../scripts/metal/dns-server.js';

const { Packet } = DNS;

function request(name: string, type: number, ednsPayload?: number): DNS.Packet {
  const p = new Packet();
  p.header.id = 4242;
  p.header.rd = 1;
  p.questions.push({ name, type, class: Packet.CLASS.IN } as DNS.Packet.Question);
  // dns2 types EDNS() with one parameter; the JS takes the payload size as a second one.
  const edns = Packet.Resource.EDNS as unknown as (rdata: object[], opts: { udpPayloadSize: number }) => DNS.Packet.Resource;
  if (ednsPayload) p.additionals.push(edns([], { udpPayloadSize: ednsPayload }));
  // What the server sees is what came off the wire.
  return Packet.parse(p.toBuffer());
}

const zone = (addresses: string[]): Zone => ({ origin: 'lab.k8s', records: new Map([['minions.lab.k8s', addresses]]), ttl: 17 });
const ipv4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((o) => o.join('.'));

t.test('A answers encode to the same message dns2 would send, over TCP', async (t) => {
  fc.assert(
    fc.property(fc.array(ipv4, { minLength: 1, maxLength: 300 }), fc.constantFrom('minions.lab.k8s', 'MINIONS.Lab.k8s', 'minions.lab.k8s.'), (addresses, name) => {
      const req = request(name, Packet.TYPE.A);
      const ours = Packet.parse(encodeResponse(req, answerQuery(zone(addresses), req), 'tcp'));
      const theirs = Packet.parse(answerQuery(zone(addresses), req).toBuffer());
      t.same(ours.header, theirs.header);
      t.same(ours.questions, theirs.questions);
      t.same(
        ours.answers.map((r) => [r.name.toLowerCase(), r.type, r.class, r.ttl, r.address]),
        theirs.answers.map((r) => [r.name.toLowerCase(), r.type, r.class, r.ttl, r.address]),
      );
      return true;
    }),
    { numRuns: 40 },
  );
});

t.test('over UDP, an answer past 512 bytes (or the EDNS size offered) becomes TC with the question only', async (t) => {
  const many = Array.from({ length: 100 }, (_, i) => `10.0.0.${i}`);
  const req = request('minions.lab.k8s', Packet.TYPE.A);
  const udp = encodeResponse(req, answerQuery(zone(many), req), 'udp');
  t.ok(udp.length <= 512);
  const parsed = Packet.parse(udp);
  t.match(parsed.header, { id: 4242, tc: 1, aa: 1, qr: 1, rcode: 0 });
  t.same(parsed.answers, []);
  t.equal(parsed.questions[0]?.name, 'minions.lab.k8s');

  const big = request('minions.lab.k8s', Packet.TYPE.A, 4096);
  const fits = Packet.parse(encodeResponse(big, answerQuery(zone(many), big), 'udp'));
  t.equal(fits.header.tc, 0, 'a client offering 4096 bytes gets 100 records over UDP');
  t.equal(fits.answers.length, 100);

  const few = Packet.parse(encodeResponse(req, answerQuery(zone(many.slice(0, 3)), req), 'udp'));
  t.equal(few.header.tc, 0);
  t.same(few.answers.map((r) => r.address), ['10.0.0.0', '10.0.0.1', '10.0.0.2']);
});

t.test('everything else is dns2-encoded: SOA, NXDOMAIN, REFUSED', async (t) => {
  const z = zone(['10.0.0.1']);
  for (const [name, type, rcode] of [
    ['lab.k8s', Packet.TYPE.SOA, 0],
    ['nobody.lab.k8s', Packet.TYPE.A, 3],
    ['example.com', Packet.TYPE.A, 5],
  ] as const) {
    const req = request(name, type);
    const res = answerQuery(z, req);
    t.same(encodeResponse(req, res, 'udp'), res.toBuffer(), name);
    t.equal(Packet.parse(encodeResponse(req, res, 'udp')).header.rcode, rcode);
  }
});

t.test('the UDP fast path sends exactly what the dns2 path sends, or steps aside', async (t) => {
  const small = fc.array(ipv4, { minLength: 0, maxLength: 40 });
  const names = fc.constantFrom('minions.lab.k8s', 'MINIONS.Lab.K8S', 'masters.lab.k8s', 'lab.k8s', 'nope.lab.k8s', 'minions.other.k8s', 'minions.lab.k8s.evil');
  const types = fc.constantFrom(Packet.TYPE.A, Packet.TYPE.ANY, Packet.TYPE.AAAA, Packet.TYPE.SOA, Packet.TYPE.NS);
  let fast = 0;
  let tried = 0;
  fc.assert(
    fc.property(small, names, types, fc.nat(0xffff), fc.boolean(), fc.boolean(), (addresses, name, type, id, rd, edns) => {
      tried++;
      const p = new Packet();
      p.header.id = id;
      p.header.rd = rd ? 1 : 0;
      p.questions.push({ name, type, class: Packet.CLASS.IN } as DNS.Packet.Question);
      const ednsOf = Packet.Resource.EDNS as unknown as (rdata: object[], opts: { udpPayloadSize: number }) => DNS.Packet.Resource;
      if (edns) p.additionals.push(ednsOf([], { udpPayloadSize: 4096 }));
      const wire = p.toBuffer();
      const z = zone(addresses);
      const got = fastAnswer(z, wire);
      if (!got) return;
      fast++;
      const parsed = Packet.parse(wire);
      t.same([...got.bytes], [...encodeResponse(parsed, answerQuery(z, parsed), 'udp')], `${name} type ${type}`);
    }),
    { numRuns: 400, seed: 7 },
  );
  t.comment(`${tried} queries tried, ${fast} answered by the fast path`);
  t.ok(fast > 10, 'the fast path does answer plain A queries (about 6% of this mix)');
});
