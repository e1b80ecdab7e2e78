//! ECR control plane: auth tokens, repositories, images, repository settings.
