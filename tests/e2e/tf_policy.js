// tests/e2e/tf_policy.js — tfsec/checkov-style policy checks on terraform/ (terraform
// cannot run here): every .tf file is parsed with @cdktf/hcl2json (HashiCorp's own HCL
// parser compiled to wasm) and the security posture of SPEC/issue 8 is asserted on the
// parsed resources. Prints "ok - …"/"not ok - …" per check; exits 1 if any failed.
//
//   node tf_policy.js TERRAFORM_DIR REGIONS_YAML
'use strict';
const { parse } = require('@cdktf/hcl2json');
const fs = require('fs');
const path = require('path');

const [dir, regionsFile] = process.argv.slice(2);
let failed = 0;
function check(name, fn) {
	let why = '';
	try { why = fn(); } catch (e) { why = e.message; }
	if (why === true || why === undefined || why === '') console.log(`ok - terraform: ${name}`);
	else { failed++; console.log(`not ok - terraform: ${name}: ${why}`); }
}
function tfFiles(d) {
	return fs.readdirSync(d).filter(f => f.endsWith('.tf')).map(f => path.join(d, f));
}
async function load(files) {
	const out = { resource: {}, module: {}, provider: {}, data: {} };
	for (const f of files) {
		const j = await parse(f, fs.readFileSync(f, 'utf8'));
		for (const kind of Object.keys(out))
			for (const [t, byName] of Object.entries(j[kind] || {})) {
				out[kind][t] = out[kind][t] || {};
				if (kind === 'provider') { out[kind][t] = (out[kind][t].length ? out[kind][t] : []).concat(byName); continue; }
				if (kind === 'module') { out[kind][t] = byName[0]; continue; }
				for (const [n, blocks] of Object.entries(byName)) out[kind][t][n] = blocks[0];
			}
	}
	return out;
}
const res = (m, type) => Object.entries(m.resource[type] || {});
const one = (m, type) => { const r = res(m, type); if (r.length !== 1) throw new Error(`${r.length} ${type}`); return r[0][1]; };
const flat = v => (v === undefined ? [] : Array.isArray(v) ? v : [v]);
const arr = v => flat(v).flatMap(x => (Array.isArray(x) ? x : [x]));
// A jsonencode({...}) policy: hcl2json keeps it as an expression string; pull each
// object of its Statement list out of the HCL object syntax (braces counted, so an
// interpolation such as "${aws_s3_bucket.backups.arn}/*" stays inside its statement).
function statements(expr) {
	const s = String(expr);
	const out = [];
	const at = s.search(/\bStatement\s*=\s*\[/);
	if (at < 0) throw new Error('no statement in ' + s.slice(0, 80));
	for (let i = s.indexOf('[', at) + 1, depth = 0, start = 0; i < s.length; i++) {
		const c = s[i];
		if (c === '{') {
			if (depth++ === 0) start = i + 1;
		} else if (c === '}') {
			if (--depth === 0) out.push(s.slice(start, i));
		} else if (c === ']' && depth === 0) break;
	}
	if (out.length === 0) throw new Error('no statement in ' + s.slice(0, 80));
	return out.map(b => {
		const eff = (b.match(/\bEffect\s*=\s*"(\w+)"/) || [])[1];
		const list = k => {
			const mm = b.match(new RegExp(`\\b${k}\\s*=\\s*(\\[[^\\]]*\\]|"[^"]*")`));
			return mm ? (mm[1].replace(/^\[|\]$/g, '').match(/"([^"]*)"|([A-Za-z_][\w.\[\]"-]*)/g) || []).map(x => x.replace(/^"|"$/g, '')) : [];
		};
		return { effect: eff, actions: list('Action'), resources: list('Resource'), principal: /\bPrincipal\b/.test(b) };
	});
}

(async () => {
	const root = await load(tfFiles(dir));
	const m = await load(tfFiles(path.join(dir, 'modules', 'cell')));

	// ---------------------------------------------------------------- regions
	const yaml = fs.readFileSync(regionsFile, 'utf8');
	const regions = [];
	let cur = null;
	for (const line of yaml.split('\n')) {
		let mm;
		if ((mm = line.match(/^\s*- name:\s*(\S+)/))) regions.push(cur = { name: mm[1] });
		else if (cur && (mm = line.match(/^\s+(\w+):\s*(\S+)/))) cur[mm[1]] = mm[2];
	}
	check('every region of regions.yaml has its module instance with its AWS region and CIDR, and no other', () => {
		const mods = Object.entries(root.module).filter(([, b]) => b.source === './modules/cell');
		if (mods.length !== regions.length) return `${mods.length} module instances, ${regions.length} regions`;
		const provs = {};
		for (const p of root.provider.aws || []) provs[p.alias] = p.region;
		for (const r of regions) {
			const hit = mods.find(([, b]) => b.region === r.name);
			if (!hit) return `no module for ${r.name}`;
			const alias = String((hit[1].providers || {}).aws).match(/aws\.(\w+)/);
			if (!alias || provs[alias[1]] !== r.aws_region) return `${r.name}: provider region ${alias && provs[alias[1]]} != ${r.aws_region}`;
			if (hit[1].vpc_cidr !== r.vpc_cidr) return `${r.name}: vpc_cidr ${hit[1].vpc_cidr} != ${r.vpc_cidr}`;
		}
		const cidrs = mods.map(([, b]) => b.vpc_cidr);
		if (new Set(cidrs).size !== cidrs.length) return 'two cells share a VPC CIDR';
	});
	check('us → us-east-1, eu → eu-west-1, uk → eu-west-2', () => {
		const want = { us: 'us-east-1', eu: 'eu-west-1', uk: 'eu-west-2' };
		for (const [r, a] of Object.entries(want)) {
			const e = regions.find(x => x.name === r);
			if (!e || e.aws_region !== a) return `${r} is not in ${a}`;
		}
	});
	check('exactly one cell serves the status page, the first region', () => {
		const st = Object.values(root.module).filter(b => b.status_page === true);
		if (st.length !== 1 || st[0].region !== regions[0].name) return `${st.length} status cells`;
	});

	// ---------------------------------------------------------------- network
	check('private subnets in two availability zones, no public IPs', () => {
		const p = m.resource.aws_subnet.private, q = m.resource.aws_subnet.public;
		if (!(p.count >= 2)) return `private count ${p.count}`;
		if (!/names\[count\.index\]/.test(p.availability_zone)) return 'private subnets not spread over AZs';
		if (q.map_public_ip_on_launch !== false) return 'public subnet maps public IPs';
		if (p.map_public_ip_on_launch === true) return 'private subnet maps public IPs';
	});
	check('0.0.0.0/0 (or ::/0) ingress only on 443 and 25, single ports, tcp', () => {
		const open = [];
		const isOpen = b => arr(b.cidr_blocks).includes('0.0.0.0/0') || arr(b.ipv6_cidr_blocks).includes('::/0');
		for (const [n, g] of res(m, 'aws_security_group'))
			for (const i of flat(g.ingress)) if (isOpen(i)) open.push([n, i]);
		for (const [n, r] of res(m, 'aws_security_group_rule'))
			if (r.type === 'ingress' && isOpen(r)) open.push([n, r]);
		for (const [n, r] of res(m, 'aws_vpc_security_group_ingress_rule'))
			if (r.cidr_ipv4 === '0.0.0.0/0' || r.cidr_ipv6 === '::/0') open.push([n, r]);
		const ports = open.map(([, r]) => r.from_port).sort((a, b) => a - b);
		if (JSON.stringify(ports) !== '[25,443]') return `open ports ${JSON.stringify(ports)}`;
		for (const [n, r] of open) if (r.to_port !== r.from_port || r.protocol !== 'tcp') return `${n}: ${r.from_port}-${r.to_port}/${r.protocol}`;
	});
	check('no egress to 0.0.0.0/0 from any security group', () => {
		for (const [n, g] of res(m, 'aws_security_group'))
			for (const e of flat(g.egress)) if (arr(e.cidr_blocks).includes('0.0.0.0/0')) return n;
		for (const [n, r] of res(m, 'aws_security_group_rule'))
			if (r.type === 'egress' && arr(r.cidr_blocks).includes('0.0.0.0/0')) return n;
	});
	check('PostgreSQL reachable only from the daemons with a database role (not gateway, mail-ingest) and the migration host', () => {
		const rules = res(m, 'aws_security_group_rule').filter(([, r]) => r.from_port === 5432);
		if (rules.length === 0) return 'no 5432 rule';
		const migrateOnly = r => !r.for_each &&
			[r.security_group_id, r.source_security_group_id].every(g => /^\$\{aws_security_group\.(pg|migrate)\.id\}$/.test(g)) &&
			[r.security_group_id, r.source_security_group_id].some(g => /migrate/.test(g));
		for (const [n, r] of rules) {
			if (r.cidr_blocks) return `${n} uses CIDRs`;
			if (!/var\.db_daemons/.test(r.for_each) && !migrateOnly(r)) return `${n} is not per db daemon nor the migration host's`;
		}
	});
	check('VPC flow logs on, encrypted', () => {
		const f = one(m, 'aws_flow_log');
		const g = m.resource.aws_cloudwatch_log_group.flow;
		if (f.traffic_type !== 'ALL' || !g || !/aws_kms_key/.test(g.kms_key_id)) return 'flow logs';
	});

	// ---------------------------------------------------------------- data
	check('KMS key per region with rotation', () => {
		const k = one(m, 'aws_kms_key');
		if (k.enable_key_rotation !== true) return 'rotation off';
	});
	check('RDS: Multi-AZ, KMS-encrypted, 35-day backups, deletion protection, private, TLS forced', () => {
		const d = one(m, 'aws_db_instance');
		const want = { multi_az: true, storage_encrypted: true, backup_retention_period: 35, deletion_protection: true, publicly_accessible: false };
		for (const [k, v] of Object.entries(want)) if (d[k] !== v) return `${k} = ${d[k]}`;
		if (!/aws_kms_key/.test(d.kms_key_id)) return 'not the region key';
		if (d.skip_final_snapshot === true) return 'skip_final_snapshot';
		const pg = one(m, 'aws_db_parameter_group');
		if (!flat(pg.parameter).some(p => p.name === 'rds.force_ssl' && String(p.value) === '1')) return 'rds.force_ssl';
	});
	check('ElastiCache: TLS, at-rest encryption with the region key, replicas, ACL with the default user off', () => {
		const r = one(m, 'aws_elasticache_replication_group');
		if (r.transit_encryption_enabled !== true || r.at_rest_encryption_enabled !== true) return 'encryption off';
		if (!/aws_kms_key/.test(r.kms_key_id)) return 'not the region key';
		if (!(r.num_cache_clusters >= 2) || r.automatic_failover_enabled !== true || r.multi_az_enabled !== true) return 'no replica/failover';
		if (!r.user_group_ids || r.auth_token) return 'no ACL user group';
		const users = res(m, 'aws_elasticache_user');
		const def = users.find(([, u]) => u.user_name === 'default');
		if (!def || !/^off\b/.test(def[1].access_string)) return 'default user not off';
	});
	check('backups bucket: KMS-encrypted, versioned, 60-day lifecycle, public access blocked, TLS only', () => {
		const enc = one(m, 'aws_s3_bucket_server_side_encryption_configuration');
		const d = flat(flat(enc.rule)[0].apply_server_side_encryption_by_default)[0];
		if (d.sse_algorithm !== 'aws:kms' || !/aws_kms_key/.test(d.kms_master_key_id)) return 'encryption';
		const v = one(m, 'aws_s3_bucket_versioning');
		if (flat(v.versioning_configuration)[0].status !== 'Enabled') return 'versioning';
		const lc = flat(one(m, 'aws_s3_bucket_lifecycle_configuration').rule)[0];
		if (lc.status !== 'Enabled' || flat(lc.expiration)[0].days !== 60 ||
		    flat(lc.noncurrent_version_expiration)[0].noncurrent_days !== 60) return 'lifecycle not 60 days';
		const pab = one(m, 'aws_s3_bucket_public_access_block');
		for (const k of ['block_public_acls', 'block_public_policy', 'ignore_public_acls', 'restrict_public_buckets'])
			if (pab[k] !== true) return `${k} = ${pab[k]}`;
		const pol = statements(one(m, 'aws_s3_bucket_policy').policy);
		if (!pol.some(s => s.effect === 'Deny') || !/SecureTransport/.test(one(m, 'aws_s3_bucket_policy').policy)) return 'no TLS-only deny';
		if (one(m, 'aws_s3_bucket').force_destroy === true) return 'force_destroy';
	});
	check('EBS volumes encrypted with the region key; IMDSv2 only (session tokens required, hop limit 1, endpoint on)', () => {
		const lts = res(m, 'aws_launch_template');
		if (lts.length < 2) return `${lts.length} launch templates`;
		for (const [n, lt] of lts) {
			const ebs = flat(flat(lt.block_device_mappings)[0].ebs)[0];
			if (ebs.encrypted !== true || !/aws_kms_key/.test(ebs.kms_key_id)) return `${n} ebs`;
			const mo = flat(lt.metadata_options)[0] || {};
			if (mo.http_tokens !== 'required') return `${n} IMDSv1`;
			// One hop: the instance itself, not a container or a forwarding host behind it.
			if (mo.http_put_response_hop_limit !== 1) return `${n} hop limit ${mo.http_put_response_hop_limit}`;
			// ward-backup takes its role's credentials from IMDSv2: the endpoint stays on.
			if (mo.http_endpoint !== undefined && mo.http_endpoint !== 'enabled') return `${n} metadata endpoint ${mo.http_endpoint}`;
		}
	});

	// ---------------------------------------------------------------- compute, IAM
	check('one autoscaling group and one instance role per daemon, in the private subnets', () => {
		const a = m.resource.aws_autoscaling_group.daemon;
		if (!/var\.daemons/.test(a.for_each) || !/aws_subnet\.private/.test(a.vpc_zone_identifier)) return 'asg';
		if (!/var\.daemons/.test(m.resource.aws_iam_role.daemon.for_each)) return 'role';
		if (!/var\.daemons/.test(m.resource.aws_launch_template.daemon.for_each)) return 'launch template';
		for (const [n, g] of res(m, 'aws_autoscaling_group'))
			if (!/aws_subnet\.private/.test(g.vpc_zone_identifier)) return `${n} outside the private subnets`;
	});
	check('IAM policies: no "*" action, no service-wide action on "*", no wildcard account', () => {
		for (const type of ['aws_iam_role_policy', 'aws_iam_policy'])
			for (const [n, p] of res(m, type).concat(res(root, type)))
				for (const s of statements(p.policy)) {
					if (s.effect !== 'Allow') continue;
					for (const a of s.actions) if (a === '*' || /:\*$/.test(a)) return `${n}: action ${a}`;
					for (const r of s.resources) if (r === '*') return `${n}: resource *`;
					for (const r of s.resources) if (/^arn:aws:[^:]+:[^:]*:\*:/.test(r)) return `${n}: any account ${r}`;
				}
	});
	check('instance roles: secrets of the daemon itself only (and the public certificates), KMS only for the key holders, S3 only for backup', () => {
		const sec = m.resource.aws_iam_role_policy.secrets;
		if (!/secret:ward\/\$\{var\.region\}\/\$\{each\.key\}\//.test(sec.policy)) return 'secrets not per daemon';
		const rs = statements(sec.policy).flatMap(x => x.resources);
		const own = [':secret:ward/${var.region}/${each.key}/*', ':secret:ward/${var.region}/tls/*'];
		if (rs.length !== 2 || !own.every((w, i) => rs[i].endsWith(w))) return `secrets beyond its own and the public certificates: ${rs}`;
		if (!/var\.db_daemons/.test(m.resource.aws_iam_role_policy.kms.for_each)) return 'kms for every daemon';
		const s3 = res(m, 'aws_iam_role_policy').filter(([, p]) => /s3:/.test(p.policy));
		if (s3.length !== 1 || !/daemon\["backup"\]/.test(s3[0][1].role)) return 's3 for another daemon';
	});
	check('the backup role: list the bucket; put, get, delete its objects; the region key to encrypt and decrypt them; nothing more', () => {
		const p = (m.resource.aws_iam_role_policy || {}).backup_bucket;
		if (!p || !/daemon\["backup"\]/.test(p.role)) return 'no bucket policy on the backup role';
		const st = statements(p.policy);
		if (st.some(s => s.effect !== 'Allow')) return 'a statement that is not Allow';
		const got = st.map(s => `${[...s.actions].sort().join(',')} on ${s.resources.join(',')}`).sort();
		const want = [
			'kms:Decrypt,kms:GenerateDataKey on aws_kms_key.cell.arn',
			's3:DeleteObject,s3:GetObject,s3:PutObject on ${aws_s3_bucket.backups.arn}/*',
			's3:ListBucket on aws_s3_bucket.backups.arn',
		];
		if (JSON.stringify(got) !== JSON.stringify(want)) return JSON.stringify(got);
	});
	check('the migration host: its own role (ward/<region>/migrate/* secrets only, no KMS, no S3), PostgreSQL and the endpoints only, no instance between deploys', () => {
		const sec = (m.resource.aws_iam_role_policy || {}).migrate_secrets;
		if (!sec || !/\$\{aws_iam_role\.migrate\.id\}/.test(sec.role)) return 'no migrate secrets policy';
		const st = statements(sec.policy);
		if (st.length !== 1 || JSON.stringify(st[0].actions) !== '["secretsmanager:GetSecretValue"]') return `actions ${JSON.stringify(st.map(x => x.actions))}`;
		const want = ['migrate', 'tls'].map(d => `:secret:ward/\${var.region}/${d}/*`);
		if (st[0].resources.length !== 2 || !want.every((w, i) => st[0].resources[i].endsWith(w))) return `resources ${st[0].resources}`;
		for (const [n, p] of res(m, 'aws_iam_role_policy'))
			if (n !== 'migrate_secrets' && /aws_iam_role\.migrate\b/.test(p.role)) return `${n} also on the migrate role`;
		for (const [n, r] of res(m, 'aws_security_group_rule')) {
			const mine = /aws_security_group\.migrate\b/.test(r.security_group_id);
			if (mine && r.type === 'egress' && !(r.from_port === 5432 && /aws_security_group\.pg\b/.test(r.source_security_group_id)) &&
			    !(r.from_port === 443 && /aws_security_group\.endpoints\b/.test(r.source_security_group_id))) return `${n}: migrate egress ${r.from_port}`;
			if (mine && r.type === 'ingress') return `${n}: ingress to the migration host`;
		}
		const g = (m.resource.aws_autoscaling_group || {}).migrate;
		if (!g || g.desired_capacity !== 0 || g.min_size !== 0 || g.max_size !== 1) return 'migrate group not empty between deploys (0..1, desired 0)';
		const lt = (m.resource.aws_launch_template || {}).migrate;
		if (!lt || !/aws_security_group\.migrate\b/.test(lt.vpc_security_group_ids) || !/aws_iam_instance_profile\.migrate\b/.test(flat(lt.iam_instance_profile)[0].name)) return 'migrate launch template';
	});
	check('the status page: its own group and role (ward/<region>/status/* and tls/* secrets only, no KMS, no S3), the status balancer targets it and never the gateway; in only from that balancer on 8443, out only to Redis and the endpoints', () => {
		const S = v => JSON.stringify(v === undefined ? '' : v);
		const sec = (m.resource.aws_iam_role_policy || {}).status_secrets;
		if (!sec || !/aws_iam_role\.status\[0\]\.id/.test(sec.role)) return 'no status secrets policy on its own role';
		const st = statements(sec.policy);
		if (st.length !== 1 || JSON.stringify(st[0].actions) !== '["secretsmanager:GetSecretValue"]') return `actions ${JSON.stringify(st.map(x => x.actions))}`;
		const want = ['status', 'tls'].map(d => `:secret:ward/\${var.region}/${d}/*`);
		if (st[0].resources.length !== 2 || !want.every((w, i) => st[0].resources[i].endsWith(w))) return `the status role reads ${st[0].resources}`;
		for (const [n, p] of res(m, 'aws_iam_role_policy'))
			if (n !== 'status_secrets' && /aws_iam_role\.status\b/.test(p.role)) return `${n} also on the status role`;
		const g = (m.resource.aws_autoscaling_group || {}).status;
		if (!g || !/aws_lb_target_group\.status\b/.test(S(g.target_group_arns)) || !/aws_subnet\.private/.test(g.vpc_zone_identifier)) return 'no status group behind the status balancer';
		for (const [n, a] of res(m, 'aws_autoscaling_group'))
			if (n !== 'status' && /aws_lb_target_group\.status\b/.test(S(a.target_group_arns))) return `the status balancer targets ${n}`;
		const lt = (m.resource.aws_launch_template || {}).status;
		if (!lt || !/aws_security_group\.status\b/.test(S(lt.vpc_security_group_ids)) || !/aws_iam_instance_profile\.status\b/.test(S(flat(lt.iam_instance_profile)[0].name))) return 'status launch template';
		const ln = (m.resource.aws_lb_listener || {}).status;
		if (!ln || !/aws_lb_target_group\.status\b/.test(S(ln.default_action))) return 'the status listener forwards elsewhere';
		const tg = (m.resource.aws_lb_target_group || {}).status;
		if (!tg || tg.port !== 8443) return 'status target group not on 8443';
		for (const [n, r] of res(m, 'aws_security_group_rule')) {
			const mine = /aws_security_group\.status\b/.test(r.security_group_id);
			if (mine && r.type === 'egress' && !(r.from_port === 6379 && /aws_security_group\.redis\b/.test(r.source_security_group_id)) &&
			    !(r.from_port === 443 && /aws_security_group\.endpoints\b/.test(r.source_security_group_id))) return `${n}: status egress ${r.from_port}`;
			if (mine && r.type === 'ingress' && !(r.from_port === 8443 && r.to_port === 8443 && /aws_security_group\.lb_https\b/.test(r.source_security_group_id))) return `${n}: status ingress ${r.from_port}`;
			if (r.from_port === 8443 && ![r.security_group_id, r.source_security_group_id].some(x => /aws_security_group\.status\b/.test(x))) return `${n}: 8443 to another group than the status page's`;
		}
	});
	check('DNS *.<region>.<domain> and mx.<region>.<domain>; status.<domain> on the status cell', () => {
		const names = res(m, 'aws_route53_record').map(([, r]) => r.name);
		for (const n of ['*.${var.region}.${var.domain}', 'mx.${var.region}.${var.domain}', 'status.${var.domain}'])
			if (!names.includes(n)) return `no ${n}`;
	});
	check('public load balancers forward 443 to the gateway and 25 to mail-ingest only', () => {
		const l = res(m, 'aws_lb_listener').map(([, x]) => x.port).sort((a, b) => a - b);
		if (JSON.stringify(l) !== '[25,443,443]') return JSON.stringify(l);
	});
	process.exit(failed ? 1 : 0);
})().catch(e => { console.log(`not ok - terraform: parse: ${e.message}`); process.exit(1); });
