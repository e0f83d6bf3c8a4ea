# State lives in a versioned GCS bucket; the bucket is given at init time (partial configuration):
#   terraform init -backend-config=bucket=<project>-tfstate -backend-config=prefix=nano-banana
# (see backend.tf.example and docs/deploy.md).
terraform {
  backend "gcs" {}
}
