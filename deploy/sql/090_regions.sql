-- 090_regions — regions are configuration (deploy/regions.yaml): a region is any
-- [a-z]{2,8} name, not a fixed list, so adding a cell needs no schema change.
ALTER TABLE directory.tenants DROP CONSTRAINT tenants_region_check;
ALTER TABLE directory.tenants ADD CONSTRAINT tenants_region_check CHECK (region ~ '^[a-z]{2,8}$');
ALTER TABLE tenant.tenants DROP CONSTRAINT tenants_region_check;
ALTER TABLE tenant.tenants ADD CONSTRAINT tenants_region_check CHECK (region ~ '^[a-z]{2,8}$');
