#!/bin/sh
# One-shot `minio-init` job (image minio/mc): creates the AstrID bucket in MinIO, which
# stands in for Cloudflare R2 locally, and an access key limited to read/write on that
# bucket for the app and MLflow (as an R2 API token would be). Idempotent: safe on every
# `up`. Shell built-ins and `mc` only: the mc image has no grep, jq or curl.
set -eu

: "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}"
: "${ASTRID_BUCKET:?}" "${ASTRID_S3_ACCESS_KEY_ID:?}" "${ASTRID_S3_SECRET_ACCESS_KEY:?}"
endpoint="${MINIO_ENDPOINT:-http://minio:9000}"
policy=astrid-readwrite
policy_file=/tmp/astrid-readwrite.json

mc alias set astrid "$endpoint" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
mc mb --ignore-existing "astrid/$ASTRID_BUCKET"

printf '%s\n' '{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
      "Resource": ["arn:aws:s3:::'"$ASTRID_BUCKET"'"]
    },
    {
      "Effect": "Allow",
      "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                 "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
      "Resource": ["arn:aws:s3:::'"$ASTRID_BUCKET"'/*"]
    }
  ]
}' >"$policy_file"
mc admin policy create astrid "$policy" "$policy_file"   # creates or replaces

# `user add` creates the user or updates its secret. Attaching a policy that is already
# attached is an error in some mc releases, so attach only when it is missing.
mc admin user add astrid "$ASTRID_S3_ACCESS_KEY_ID" "$ASTRID_S3_SECRET_ACCESS_KEY"
case "$(mc admin user info astrid "$ASTRID_S3_ACCESS_KEY_ID")" in
    *"$policy"*) ;;
    *) mc admin policy attach astrid "$policy" --user "$ASTRID_S3_ACCESS_KEY_ID" ;;
esac

echo "bucket s3://$ASTRID_BUCKET ready; access key $ASTRID_S3_ACCESS_KEY_ID may read and write it"
