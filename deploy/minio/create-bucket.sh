#!/bin/sh
# One-shot `minio-init` job (image minio/mc): creates the AstrID bucket in MinIO, which
# stands in for Cloudflare R2 locally, and an access key limited to read/write on it for
# the app and MLflow (as an R2 API token would be). Idempotent: safe on every `up`.
set -eu

: "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}"
: "${ASTRID_BUCKET:?}" "${ASTRID_S3_ACCESS_KEY_ID:?}" "${ASTRID_S3_SECRET_ACCESS_KEY:?}"
endpoint="${MINIO_ENDPOINT:-http://minio:9000}"

mc alias set astrid "$endpoint" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
mc mb --ignore-existing "astrid/$ASTRID_BUCKET"

policy_file="$(mktemp)"
cat >"$policy_file" <<JSON
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
      "Resource": ["arn:aws:s3:::$ASTRID_BUCKET"]
    },
    {
      "Effect": "Allow",
      "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                 "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
      "Resource": ["arn:aws:s3:::$ASTRID_BUCKET/*"]
    }
  ]
}
JSON
mc admin policy create astrid astrid-readwrite "$policy_file"
rm -f "$policy_file"

# `user add` updates the secret of an existing user; attaching an already attached
# policy is reported as an error by some mc releases, so check first.
mc admin user add astrid "$ASTRID_S3_ACCESS_KEY_ID" "$ASTRID_S3_SECRET_ACCESS_KEY"
if ! mc admin user info astrid "$ASTRID_S3_ACCESS_KEY_ID" | grep -q 'astrid-readwrite'; then
    mc admin policy attach astrid astrid-readwrite --user "$ASTRID_S3_ACCESS_KEY_ID"
fi

echo "bucket s3://$ASTRID_BUCKET ready; access key $ASTRID_S3_ACCESS_KEY_ID can read/write it"
